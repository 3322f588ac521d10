"""Fixtures of the sql-backup tests: a demo ERP in its own schema, its own S3 prefix and topics,
a target schema in the warehouse; all removed after the test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from botocore.exceptions import ClientError
from dotenv import dotenv_values

from indutech_common.s3 import create_s3_client, ping_bucket
from indutech_common.schemas import Topics
from indutech_common.settings import S3Settings, WarehouseSettings
from indutech_common.warehouse import connect_warehouse
from indutech_devtools.erp import change_statements
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.dialects import PostgresDialect
from indutech_sql_backup.sources import OdbcSource
from tests.support.erp import demo_erp_statements
from tests.support.iam import assume_worker_role, s3_client_as, use_credentials
from tests.support.kafka import temporary_topics
from tests.support.s3 import delete_prefix, list_keys
from tests.support.stack import REPO_ROOT, StackSettings, stack_env_file
from tests.support.warehouse import table_rows

DEMO_TABLES = ("customers", "gl_entries", "invoices", "order_lines", "orders", "products")
KEYS = {"order_lines": "order_id, line_no"}
# the stack's root keys, or only the rights of deploy/iam/sql-backup.json (see s3_with_rights)
RIGHTS = [pytest.param("root", id="root"), pytest.param("iam-policy", id="iam-policy")]


@dataclass(frozen=True)
class Erp:
    """One test's names: ERP schema, backup prefix, restore schema, topics and group."""

    schema: str
    prefix: str
    target_schema: str
    work_topic: str
    completed_topic: str
    group_id: str


@pytest.fixture
async def erp(stack: StackSettings, unique: str) -> AsyncIterator[Erp]:
    names = Erp(
        schema=f"sb_{unique}",
        prefix=f"tests/sql-backup/{unique}/",
        target_schema=f"sb_restore_{unique}",
        work_topic=f"test.{unique}.sql-backup-work",
        completed_topic=f"test.{unique}.sql-backup-completed",
        group_id=f"test-sql-backup-{unique}",
    )
    topics = {names.work_topic: Topics.BACKUP_WORK, names.completed_topic: Topics.BACKUP_COMPLETED}
    async with temporary_topics(stack.kafka, topics):
        yield names
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, [f'DROP SCHEMA IF EXISTS "{names.schema}" CASCADE'])
    connection = await connect_warehouse(stack.warehouse)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{names.target_schema}" CASCADE')
    finally:
        await connection.close()
    await delete_prefix(stack.s3, stack.s3.backup_bucket, names.prefix)


async def s3_with_rights(
    rights: str, stack: StackSettings, erp: Erp, monkeypatch: pytest.MonkeyPatch
) -> tuple[S3Settings, dict[str, str]]:
    """The S3 settings sql-backup runs with in this test: the stack's keys ("root"), or
    ("iam-policy") the temporary credentials of deploy/iam/sql-backup.json, with them."""
    if rights == "root":
        return stack.s3, {}
    # Every key sql-backup writes is {backup_prefix}sql-server/… (schemas.sql_backup): the
    # test prefix goes before the policy's sql-server/*, where production's empty prefix is,
    # so the policy's paths are used unchanged.
    credentials = await assume_worker_role("sql-backup", stack, {"backup": erp.prefix})
    return use_credentials(monkeypatch, credentials, stack.s3), credentials


async def assert_sql_backup_policy_in_force(
    stack: StackSettings, erp: Erp, credentials: dict[str, str]
) -> None:
    """The policy ran the flow and no more: readiness answers, but the backup bucket outside
    sql-server/ and the lake bucket are closed to it (so a policy run cannot pass vacuously)."""
    outside = f"{erp.prefix}elsewhere/object.json"
    async with create_s3_client(stack.s3) as root:
        await root.put_object(Bucket=stack.s3.backup_bucket, Key=outside, Body=b"{}")
    async with s3_client_as(stack, credentials) as s3:
        await ping_bucket(s3, stack.s3.backup_bucket)  # the worker's /readyz ping
        with pytest.raises(ClientError, match="AccessDenied"):
            await s3.get_object(Bucket=stack.s3.backup_bucket, Key=outside)
        with pytest.raises(ClientError, match="AccessDenied"):
            await s3.put_object(Bucket=stack.s3.backup_bucket, Key=outside, Body=b"{}")
        with pytest.raises(ClientError, match="AccessDenied"):
            await s3.put_object(Bucket=stack.s3.lake_bucket, Key=f"{erp.prefix}x", Body=b"x")


async def backup_keys(stack: StackSettings, prefix: str) -> list[str]:
    return await list_keys(stack.s3, stack.s3.backup_bucket, prefix)


def settings_for(stack: StackSettings, erp: Erp, **overrides: Any) -> SqlBackupSettings:
    values: dict[str, Any] = {
        "erp": stack.erp,
        "s3": stack.s3,
        "kafka": stack.kafka,
        "target": stack.warehouse,
        "backup_prefix": erp.prefix,
        "include": (f"{erp.schema}.*",),
        "work_topic": erp.work_topic,
        "completed_topic": erp.completed_topic,
        "group_id": erp.group_id,
        "health": {"host": "127.0.0.1", "port": 0},
        "session_timeout_ms": 6000,
        "chunk_rows": 400,
        **overrides,
    }
    return SqlBackupSettings(**values)


async def generate(stack: StackSettings, erp: Erp, *, scale: int = 1, day: int = 0) -> None:
    source = OdbcSource(stack.erp, PostgresDialect())
    statements = (
        change_statements(erp.schema, day=day, scale=scale)
        if day
        else demo_erp_statements(erp.schema, scale=scale)
    )
    await asyncio.to_thread(source.execute, statements)


def erp_database(stack: StackSettings) -> WarehouseSettings:
    """The erp database over asyncpg: the tests' independent view of the source."""
    return stack.warehouse.model_copy(update={"database": stack.erp.database})


async def rows_of(
    settings: WarehouseSettings, schema: str, table: str, *, demo_table: str | None = None
) -> list[asyncpg.Record]:
    """Every row, in key order, as asyncpg decodes it (Decimal, str, bytes, datetime, UUID)."""
    order_by = KEYS.get(demo_table or table, "id")
    return await table_rows(settings, schema, table, order_by=order_by)


async def source_state(stack: StackSettings, erp: Erp) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: [tuple(r) for r in await rows_of(erp_database(stack), erp.schema, t)]
        for t in DEMO_TABLES
    }


def worker_env(erp: Erp, **settings: str) -> dict[str, str]:
    stack_env = {k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SQL_BACKUP_", "INDUTECH_"))},
        **stack_env,
        "SQL_BACKUP_BACKUP_PREFIX": erp.prefix,
        "SQL_BACKUP_WORK_TOPIC": erp.work_topic,
        "SQL_BACKUP_COMPLETED_TOPIC": erp.completed_topic,
        "SQL_BACKUP_GROUP_ID": erp.group_id,
        "SQL_BACKUP_HEALTH__HOST": "127.0.0.1",
        "SQL_BACKUP_HEALTH__PORT": "0",
        "SQL_BACKUP_SESSION_TIMEOUT_MS": "6000",
        "SQL_BACKUP_LOGGING__LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(settings)
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "indutech_sql_backup", "worker"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
