"""sql-backup follows the worker template (services/README.md): worker.py holds the replica's
lifecycle only, the CLI imports at module level, resources are closed by the base Worker,
the bucket's JSON objects go through the common JsonObjectStore, and no demo generator
ships in the production package."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import indutech_sql_backup
from indutech_common.lifecycle import Worker
from indutech_common.s3 import JsonObjectStore
from indutech_sql_backup.cli import main
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.scheduling import DeltaScheduler
from indutech_sql_backup.sinks import BackupStore
from indutech_sql_backup.worker import SqlBackupWorker

PACKAGE = Path(indutech_sql_backup.__file__).parent


def tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / module).read_text(), filename=module)


def function_local_imports(module: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(module):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [
                f"{node.name}:{inner.lineno}"
                for inner in ast.walk(node)
                if isinstance(inner, ast.Import | ast.ImportFrom)
            ]
    return found


class TestTemplate:
    def test_worker_module_holds_the_replica_lifecycle_only(self) -> None:
        """Planning, announcing, scheduling and the message schemas live in their own modules."""
        defined = {
            node.name
            for node in tree("worker.py").body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        assert defined == {"DeadLetters", "SqlBackupWorker", "_retrieve"}

    def test_the_cli_imports_at_module_level(self) -> None:
        assert function_local_imports(tree("cli.py")) == []

    @pytest.mark.parametrize("worker", [SqlBackupWorker, DeltaScheduler])
    def test_resources_are_closed_by_the_base_worker(
        self, worker: type[Worker[SqlBackupSettings]]
    ) -> None:
        """No own exit stack and no shutdown hook: what startup opens is registered."""
        assert worker.shutdown is Worker.shutdown
        for path in PACKAGE.rglob("*.py"):
            assert "AsyncExitStack" not in path.read_text(), path.name

    def test_the_backup_store_is_a_json_object_store(self) -> None:
        """One copy of get/put/missing-key handling: the common one."""
        assert issubclass(BackupStore, JsonObjectStore)


class TestNoDemoGenerator:
    def test_the_package_has_no_generator(self) -> None:
        assert importlib.util.find_spec("indutech_sql_backup.generator") is None

    def test_the_cli_offers_no_generate_command(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["generate"])
        assert exited.value.code == 2
        assert "invalid choice: 'generate'" in capsys.readouterr().err
