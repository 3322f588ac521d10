"""Fixtures of the sql-to-redshift tests: a demo ERP backed up by the real sql-backup into its
own S3 prefix, and the warehouse schemas the loader writes (all removed after the test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest
from botocore.exceptions import ClientError

from indutech_common.s3 import create_s3_client, ping_bucket
from indutech_common.settings import S3Settings
from indutech_common.warehouse import connect_warehouse
from indutech_sql_backup.dialects import PostgresDialect
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.sources import OdbcSource
from indutech_sql_to_redshift.cli import opened
from indutech_sql_to_redshift.config import SqlToRedshiftSettings
from indutech_sql_to_redshift.loading import Loading
from tests.integration.sql_backup.conftest import Erp, erp_database, generate, settings_for
from tests.support.iam import assume_worker_role, s3_client_as, use_credentials
from tests.support.s3 import delete_prefix
from tests.support.stack import StackSettings

DAY0 = date(2026, 3, 1)
# the stack's root keys, or only the rights of deploy/iam/sql-to-redshift.json
RIGHTS = [pytest.param("root", id="root"), pytest.param("iam-policy", id="iam-policy")]
# Redshift's COPY manifests go to the lake under this (production's) prefix, after the test's
STAGING_PREFIX: str = SqlToRedshiftSettings.model_fields["staging_prefix"].default


def night(n: int) -> date:
    return DAY0 + timedelta(days=n)


@dataclass(frozen=True)
class Names:
    erp: Erp
    raw: str
    models: str


@pytest.fixture
async def names(stack: StackSettings, unique: str) -> AsyncIterator[Names]:
    erp = Erp(
        schema=f"s2r_src_{unique}",
        prefix=f"tests/sql-to-redshift/{unique}/",
        target_schema=f"s2r_unused_{unique}",
        work_topic=f"test.{unique}.unused-work",
        completed_topic=f"test.{unique}.sql-backup-completed",
        group_id=f"test-s2r-{unique}",
    )
    result = Names(erp, raw=f"s2r_raw_{unique}", models=f"s2r_erp_{unique}")
    yield result
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, [f'DROP SCHEMA IF EXISTS "{erp.schema}" CASCADE'])
    connection = await connect_warehouse(stack.warehouse)
    try:
        for schema in (result.raw, result.models):
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
    await delete_prefix(stack.s3, stack.s3.backup_bucket, erp.prefix)
    await delete_prefix(stack.s3, stack.s3.lake_bucket, erp.prefix)


async def s3_with_rights(
    rights: str, stack: StackSettings, names: Names, monkeypatch: pytest.MonkeyPatch
) -> tuple[S3Settings, dict[str, str]]:
    """The S3 settings the loader runs with in this test: the stack's keys ("root"), or
    ("iam-policy") the temporary credentials of deploy/iam/sql-to-redshift.json, with them."""
    if rights == "root":
        return stack.s3, {}
    # It reads {backup_prefix}sql-server/… and writes {staging_prefix}…: the test prefix goes
    # before the policy's sql-server/* and warehouse-staging/sql-to-redshift/*, where
    # production's empty prefixes are (staging_prefix: staging_prefix_of).
    prefixes = {"backup": names.erp.prefix, "lake": names.erp.prefix}
    credentials = await assume_worker_role("sql-to-redshift", stack, prefixes)
    return use_credentials(monkeypatch, credentials, stack.s3), credentials


def staging_prefix_of(names: Names) -> str:
    return f"{names.erp.prefix}{STAGING_PREFIX}"


async def assert_sql_to_redshift_policy_in_force(
    stack: StackSettings, names: Names, credentials: dict[str, str]
) -> None:
    """The policy ran the load and no more: readiness answers, but the backup is read-only
    to it and the lake closed outside its staging prefix (so a policy run cannot pass
    vacuously)."""
    prefix = names.erp.prefix
    outside = f"{prefix}elsewhere/object.json"
    async with create_s3_client(stack.s3) as root:
        await root.put_object(Bucket=stack.s3.lake_bucket, Key=outside, Body=b"{}")
    async with s3_client_as(stack, credentials) as s3:
        await ping_bucket(s3, stack.s3.backup_bucket)  # the worker's /readyz ping
        with pytest.raises(ClientError, match="AccessDenied"):
            await s3.put_object(
                Bucket=stack.s3.backup_bucket, Key=f"{prefix}sql-server/x.json", Body=b"{}"
            )
        with pytest.raises(ClientError, match="AccessDenied"):
            await s3.get_object(Bucket=stack.s3.lake_bucket, Key=outside)
        with pytest.raises(ClientError, match="AccessDenied"):
            await s3.put_object(Bucket=stack.s3.lake_bucket, Key=outside, Body=b"{}")


def loader_settings(stack: StackSettings, names: Names, **overrides: Any) -> SqlToRedshiftSettings:
    values: dict[str, Any] = {
        "s3": stack.s3,
        "warehouse": stack.warehouse,
        "kafka": stack.kafka,
        "backup_prefix": names.erp.prefix,
        "database": stack.erp.database,
        "source_schema": names.erp.schema,
        "raw_schema": names.raw,
        "model_schema": names.models,
        "completed_topic": names.erp.completed_topic,
        "group_id": names.erp.group_id,
        "health": {"host": "127.0.0.1", "port": 0},
        "session_timeout_ms": 6000,
        **overrides,
    }
    return SqlToRedshiftSettings(**values)


async def run_source_sql(stack: StackSettings, *statements: str) -> None:
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, list(statements))


class Backups:
    """The real sql-backup over the demo ERP: a full on DAY0, then one delta per night."""

    def __init__(self, stack: StackSettings, names: Names, tables: tuple[str, ...]) -> None:
        self.stack = stack
        self.names = names
        self.tables = [f"{names.erp.schema}.{t}" for t in tables]
        self.settings = settings_for(stack, names.erp, chunk_rows=1500)

    async def full(self) -> None:
        await generate(self.stack, self.names.erp)
        await self.backup("full", DAY0)

    async def delta(self, n: int) -> None:
        await generate(self.stack, self.names.erp, day=n)
        await self.backup("delta", night(n))

    async def backup(self, kind: str, day: date) -> None:
        async with create_s3_client(self.stack.s3) as s3:
            engine = Engine(self.settings, s3)
            tables = await engine.discover(self.tables)
            results = await engine.backup(tables, kind=kind, day=day)  # type: ignore[arg-type]
            assert all(created for _, created in results)


async def fetch(stack: StackSettings, sql: str, *, source: bool = False) -> list[tuple[Any, ...]]:
    settings = erp_database(stack) if source else stack.warehouse
    connection: asyncpg.Connection = await connect_warehouse(settings)
    try:
        return [tuple(r) for r in await connection.fetch(sql)]
    finally:
        await connection.close()


MODELS = ("dim_customer", "dim_product", "fact_order_line", "fact_invoice", "gl_balance")


async def warehouse_state(
    stack: StackSettings, names: Names, tables: tuple[str, ...], *, models: tuple[str, ...] = MODELS
) -> dict[str, Any]:
    """Staged tables, models, heads and the ledger: what a rerun must leave unchanged."""
    state: dict[str, Any] = {}
    only = ", ".join(f"'{t}'" for t in tables)
    for table in tables:
        state[table] = await fetch(stack, f"SELECT * FROM {names.raw}.{table} ORDER BY 1, 2")  # noqa: S608
    state["heads"] = await fetch(
        stack,
        f"SELECT source_table, day, kind, position_to, manifest FROM {names.raw}._load_state "  # noqa: S608
        f"WHERE source_table IN ({only}) ORDER BY 1",
    )
    for model in models:
        state[model] = await fetch(stack, f"SELECT * FROM {names.models}.{model} ORDER BY 1, 2, 3")  # noqa: S608
    state["ledger"] = await fetch(
        stack,
        f"SELECT source_table, day, kind, manifest, table_rows FROM {names.raw}._load_ledger "  # noqa: S608
        f"WHERE source_table IN ({only}) ORDER BY 1, 2, 3",
    )
    return state


async def load_all(settings: SqlToRedshiftSettings, **kwargs: Any) -> Any:
    async with opened(settings) as loading:
        return await loading.load_all(**kwargs)


__all__ = [
    "DAY0",
    "RIGHTS",
    "Backups",
    "Loading",
    "Names",
    "assert_sql_to_redshift_policy_in_force",
    "fetch",
    "load_all",
    "loader_settings",
    "night",
    "s3_with_rights",
    "staging_prefix_of",
]
