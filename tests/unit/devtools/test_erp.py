"""The demo ERP generator (indutech_devtools.erp): a dev tool with its own small CLI, and a
plain ERP whose change capture is handed in (it never imports a worker)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from indutech_devtools import erp


class TestCreate:
    def test_change_capture_runs_between_the_tables_and_their_rows(self) -> None:
        statements = erp.create_statements("demo", scale=1, change_capture=["-- capture"])
        at = statements.index("-- capture")
        assert all(s.startswith(("DROP", "CREATE")) for s in statements[:at])
        assert sum(s.startswith("CREATE TABLE") for s in statements[:at]) == len(erp.TABLES)
        assert all(s.startswith("INSERT") for s in statements[at + 1 :])

    def test_identifiers_are_quoted_and_the_scale_filled_in(self) -> None:
        statements = erp.create_statements('we"ird', scale=2, change_capture=())
        assert 'CREATE SCHEMA "we""ird"' in statements
        assert not any("{customers}" in s or "{products}" in s for s in statements)
        assert any("generate_series(1, 200)" in s for s in statements)  # 100 customers a scale

    def test_keys_of_every_table(self) -> None:
        assert erp.table_keys()["order_lines"] == ("order_id", "line_no")
        assert set(erp.table_keys()) == set(erp.TABLES)

    def test_it_imports_no_worker(self) -> None:
        module = ast.parse(Path(erp.__file__).read_text())
        imported = {
            name.split(".")[0]
            for node in ast.walk(module)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            )
            if name
        }
        assert not {name for name in imported if name.startswith("indutech_")}


class TestCli:
    def test_create_prints_the_sql(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert erp.main(["create", "--schema", "erp_demo", "--scale", "1"]) == 0
        out = capsys.readouterr().out
        assert 'CREATE TABLE "erp_demo"."orders" (' in out
        assert out.count(";\n") == len(erp.create_statements("erp_demo", scale=1))

    def test_change_needs_a_day(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert erp.main(["change", "--schema", "erp_demo", "--day", "1"]) == 0
        assert 'DELETE FROM "erp_demo".products WHERE id = 1;' in capsys.readouterr().out
        with pytest.raises(SystemExit) as exited:
            erp.main(["change"])
        assert exited.value.code == 2

    def test_module_help(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "indutech_devtools.erp", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0
        assert "prepare-source" in done.stdout
