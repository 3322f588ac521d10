"""identity-sync follows the worker template (services/README.md) where a test can say so."""

from __future__ import annotations

import ast
from pathlib import Path

import indutech_identity_sync

PACKAGE = Path(indutech_identity_sync.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


class TestLayout:
    def test_a_sink_imports_no_source(self) -> None:
        """What passes from sources to sinks is the worker's own types, never a source's."""
        offenders = {
            path.name: sorted(m for m in imported_modules(path) if ".sources" in m)
            for path in (PACKAGE / "sinks").glob("*.py")
        }
        assert not {name: mods for name, mods in offenders.items() if mods}

    def test_exceptions_live_in_errors(self) -> None:
        """Every exception class of the package is defined in errors.py."""
        defined_elsewhere = [
            f"{path.relative_to(PACKAGE)}:{node.name}"
            for path in PACKAGE.rglob("*.py")
            if path.name != "errors.py"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ClassDef)
            and any(
                isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception"))
                for base in node.bases
            )
        ]
        assert defined_elsewhere == []
