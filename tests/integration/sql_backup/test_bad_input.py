"""Bad input fails with a message that says what to do next, and leaves nothing a later run
would trust."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from indutech_sql_backup.cli import main
from indutech_sql_backup.dialects import PostgresDialect
from indutech_sql_backup.sources import OdbcSource
from tests.integration.sql_backup.conftest import Erp, backup_keys, generate, worker_env
from tests.support.stack import StackSettings


def run_cli(monkeypatch: pytest.MonkeyPatch, erp: Erp, argv: list[str], **env: str) -> int:
    for name, value in worker_env(erp, SQL_BACKUP_LOGGING__LEVEL="ERROR", **env).items():
        monkeypatch.setenv(name, value)
    return main(argv)


class TestBadInput:
    @pytest.mark.parametrize(
        ("case", "env", "expected"),
        [
            ("unknown table", {}, "unknown table(s)"),
            ("no key", {}, "has no primary key and no key override"),
            (
                "wrong password",
                {"SQL_BACKUP_ERP__PASSWORD": "not-the-password"},
                "refused the credentials",
            ),
            ("unreachable", {"SQL_BACKUP_ERP__PORT": "1"}, "could not reach"),
        ],
    )
    async def test_clear_error_and_nothing_written(  # noqa: PLR0917 - fixtures + parameters
        self,
        stack: StackSettings,
        erp: Erp,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        case: str,
        env: dict[str, Any],
        expected: str,
    ) -> None:
        """Each failure exits 1 naming the cause; no plan, part or manifest is left in S3."""
        source = OdbcSource(stack.erp, PostgresDialect())
        await asyncio.to_thread(
            source.execute,
            [
                f'CREATE SCHEMA "{erp.schema}"',
                f'CREATE TABLE "{erp.schema}".keyless (a integer, b text)',
                f"INSERT INTO \"{erp.schema}\".keyless VALUES (1, 'x')",  # noqa: S608 - test schema
            ],
        )
        table = {
            "unknown table": f"{erp.schema}.nope",
            "no key": f"{erp.schema}.keyless",
        }.get(case, f"{erp.schema}.keyless")
        code = await asyncio.to_thread(
            run_cli, monkeypatch, erp, ["backup", "--table", table], **env
        )
        error = capsys.readouterr().err
        assert code == 1, error
        assert expected in error
        assert "not-the-password" not in error
        assert "Traceback" not in error
        assert await backup_keys(stack, erp.prefix) == []

    async def test_delta_without_full_is_refused(
        self,
        stack: StackSettings,
        erp: Erp,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A delta continues a full run; without one it stops before writing anything."""
        await generate(stack, erp)
        code = await asyncio.to_thread(
            run_cli,
            monkeypatch,
            erp,
            ["backup", "--kind", "delta", "--table", f"{erp.schema}.orders"],
        )
        assert code == 1
        assert "no complete full backup" in capsys.readouterr().err
        assert await backup_keys(stack, erp.prefix) == []
