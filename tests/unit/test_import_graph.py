"""Workers meet only in topics and S3: no worker imports another, common imports none."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import REPO_ROOT

SERVICE_PACKAGES = {
    src.name: src for src in (REPO_ROOT / "services").glob("*/src/indutech_*") if src.is_dir()
}
COMMON = REPO_ROOT / "libs" / "common" / "src" / "indutech_common"


def imported_top_level_packages(package_dir: Path) -> Iterator[tuple[Path, str]]:
    for path in package_dir.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module.split(".")[0]


class TestImportGraph:
    def test_there_are_workers_to_check(self) -> None:
        assert len(SERVICE_PACKAGES) >= 4

    @pytest.mark.parametrize("package", sorted(SERVICE_PACKAGES))
    def test_a_worker_imports_no_other_worker(self, package: str) -> None:
        others = set(SERVICE_PACKAGES) - {package}
        found = [
            f"{path.relative_to(REPO_ROOT)} imports {name}"
            for path, name in imported_top_level_packages(SERVICE_PACKAGES[package])
            if name in others
        ]
        assert found == [], "read other workers' contracts from indutech_common.schemas"

    def test_common_imports_no_worker(self) -> None:
        found = [
            f"{path.relative_to(REPO_ROOT)} imports {name}"
            for path, name in imported_top_level_packages(COMMON)
            if name in SERVICE_PACKAGES
        ]
        assert found == []
