# ruff: noqa: S608 - SQL built from the test's own quoted schema name and constants
"""One bad table never stops the others: a table without a key, a key override that is not
unique, a table whose chunk fails; each is reported with what to do, the others are backed
up, and a setting says whether the run fails. A key that breaks only after planning stops the
restore with a clear error, not a database traceback."""

from __future__ import annotations

import asyncio
import json
from datetime import date

import pytest

from indutech_common.s3 import create_s3_client
from indutech_common.schemas.sql_backup import BackupDir
from indutech_common.warehouse import connect_warehouse
from indutech_sql_backup.cli import main
from indutech_sql_backup.dialects import PostgresDialect, TableRef
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.errors import SqlBackupError
from indutech_sql_backup.restore import Restorer
from indutech_sql_backup.sources import OdbcSource
from tests.integration.sql_backup.conftest import (
    RIGHTS,
    Erp,
    assert_sql_backup_policy_in_force,
    backup_keys,
    s3_with_rights,
    settings_for,
    worker_env,
)
from tests.support.stack import StackSettings

DAY = date(2026, 7, 1)


async def run_sql(stack: StackSettings, *statements: str) -> None:
    source = OdbcSource(stack.erp, PostgresDialect())
    await asyncio.to_thread(source.execute, list(statements))


def run_cli(monkeypatch: pytest.MonkeyPatch, erp: Erp, argv: list[str], **env: str) -> int:
    for name, value in worker_env(erp, SQL_BACKUP_LOGGING__LEVEL="ERROR", **env).items():
        monkeypatch.setenv(name, value)
    return main(argv)


class TestBadTables:
    async def test_keyless_and_non_unique_tables_are_skipped_and_the_others_backed_up(
        self,
        stack: StackSettings,
        erp: Erp,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        s = f'"{erp.schema}"'
        await run_sql(
            stack,
            f"CREATE SCHEMA {s}",
            f"CREATE TABLE {s}.good (id integer PRIMARY KEY, v text)",
            f"INSERT INTO {s}.good SELECT i, 'v' || i FROM generate_series(1, 30) i",
            f"CREATE TABLE {s}.keyless (a integer, b text)",
            f"INSERT INTO {s}.keyless VALUES (1, 'x')",
            f"CREATE TABLE {s}.dupkey (a integer, b text)",
            f"INSERT INTO {s}.dupkey VALUES (1, 'x'), (1, 'y'), (2, 'z')",
        )
        overrides = json.dumps({f"{erp.schema}.dupkey": {"key": ["a"]}})
        env = {
            "SQL_BACKUP_INCLUDE": json.dumps([f"{erp.schema}.*"]),
            "SQL_BACKUP_TABLES": overrides,
        }
        code = await asyncio.to_thread(
            run_cli, monkeypatch, erp, ["backup", "--date", str(DAY)], **env
        )
        error = capsys.readouterr().err
        assert code == 1, error
        assert f"{erp.schema}.keyless: skipped: table {erp.schema}.keyless has no primary key" in (
            error
        )
        assert (
            f"{erp.schema}.dupkey: skipped: the key override (a) of {erp.schema}.dupkey is not "
            "a key: 1 value(s) of it occur in more than one row, 0 row(s) have a NULL" in error
        )
        assert "2 table(s) skipped, the others done" in error
        assert "Traceback" not in error
        keys = await backup_keys(stack, erp.prefix)
        manifests = [k for k in keys if k.endswith("/_manifest.json")]
        assert len(manifests) == 1
        assert f".{erp.schema}.good/" in manifests[0]
        assert not [k for k in keys if "keyless" in k or "dupkey" in k], "nothing of them written"
        # The setting decides whether skipped tables fail the run.
        code = await asyncio.to_thread(
            run_cli,
            monkeypatch,
            erp,
            ["backup", "--date", str(DAY)],
            SQL_BACKUP_FAIL_ON_SKIPPED_TABLE="false",
            **env,
        )
        error = capsys.readouterr().err
        assert code == 0, error
        assert f"{erp.schema}.dupkey: skipped" in error

    @pytest.mark.parametrize("rights", RIGHTS)
    async def test_a_table_whose_chunk_fails_is_left_incomplete_and_a_rerun_finishes_it(
        self, stack: StackSettings, erp: Erp, monkeypatch: pytest.MonkeyPatch, rights: str
    ) -> None:
        """The table is dropped after planning: its chunk fails (an SQL error of the table,
        not an outage), it gets a failure marker and no manifest, the other table completes;
        once it exists again the same run resumes and completes (also with only the rights
        of deploy/iam/sql-backup.json: the rerun deletes the failure marker)."""
        s = f'"{erp.schema}"'
        create_fragile = [
            f"CREATE TABLE {s}.fragile (id integer PRIMARY KEY, v text)",
            f"INSERT INTO {s}.fragile SELECT i, 'f' || i FROM generate_series(1, 10) i",
        ]
        await run_sql(
            stack,
            f"CREATE SCHEMA {s}",
            f"CREATE TABLE {s}.good (id integer PRIMARY KEY, v text)",
            f"INSERT INTO {s}.good SELECT i, 'v' || i FROM generate_series(1, 30) i",
            *create_fragile,
        )
        s3_settings, credentials = await s3_with_rights(rights, stack, erp, monkeypatch)
        settings = settings_for(stack, erp, s3=s3_settings)
        async with create_s3_client(settings.s3) as s3:
            engine = Engine(settings, s3)
            tables = await engine.discover()
            fragile = next(t for t in tables if t.ref.name == "fragile")
            plan, _ = await engine.plan(fragile, kind="full", day=DAY)
            await run_sql(stack, f"DROP TABLE {s}.fragile")
            results = await engine.backup(tables, kind="full", day=DAY)
            assert [m.plan.table for m, _ in results] == ["good"]
            [skipped] = engine.skipped
            assert skipped.table == f"{erp.schema}.fragile"
            assert "does not exist" in skipped.reason
            assert "no manifest" in skipped.reason
            directory = BackupDir.of(settings.backup_prefix, plan)
            keys = await backup_keys(stack, erp.prefix)
            assert directory.failure(0) in keys
            assert directory.manifest not in keys
            await run_sql(stack, *create_fragile)
            again = Engine(settings, s3)
            results = await again.backup(await again.discover(), kind="full", day=DAY)
            assert sorted(m.plan.table for m, _ in results) == ["fragile", "good"]
            assert again.skipped == []
            manifest = next(m for m, _ in results if m.plan.table == "fragile")
            assert manifest.plan.plan_id == plan.plan_id, "the run was resumed"
            assert manifest.rows == 10
        keys = await backup_keys(stack, erp.prefix)
        assert directory.failure(0) not in keys, "the failure marker is gone once redone"
        if credentials:
            await assert_sql_backup_policy_in_force(stack, erp, credentials)

    async def test_a_key_broken_after_planning_stops_the_restore_with_a_clear_error(
        self, stack: StackSettings, erp: Erp
    ) -> None:
        """The override was unique when planned; a duplicate arrives before the chunk runs, so
        the backup holds it. The restore says the key is not unique and leaves nothing."""
        s = f'"{erp.schema}"'
        await run_sql(
            stack,
            f"CREATE SCHEMA {s}",
            f"CREATE TABLE {s}.raced (a integer, b text)",
            f"INSERT INTO {s}.raced SELECT i, 'r' || i FROM generate_series(1, 20) i",
        )
        settings = settings_for(stack, erp, tables={f"{erp.schema}.raced": {"key": ["a"]}})
        target = TableRef(erp.target_schema, "raced")
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings, s3)
            tables = await engine.discover()
            await engine.plan(tables[0], kind="full", day=DAY)
            await run_sql(stack, f"INSERT INTO {s}.raced VALUES (7, 'again')")
            [(manifest, _)] = await engine.backup(tables, kind="full", day=DAY)
            assert manifest.rows == 21
            with pytest.raises(SqlBackupError, match=r"holds rows that break its key \(a, from "):
                await Restorer(settings, s3).restore(
                    TableRef(erp.schema, "raced"), day=DAY, target=target
                )
        connection = await connect_warehouse(stack.warehouse)
        try:
            name = f'"{target.schema}"."{target.name}"'
            assert await connection.fetchval("SELECT to_regclass($1)", name) is None
        finally:
            await connection.close()
