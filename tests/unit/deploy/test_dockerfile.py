"""The image's Dockerfile: multi-stage, not root, the ODBC and LDAP libraries, linted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.containers import ComposeFile
from tests.support.stack import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def _dockerfiles() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*Dockerfile"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO_ROOT / name for name in listed]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    pairs = []
    for line in lines:
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


class TestLint:
    def test_hadolint_finds_every_dockerfile_clean(self) -> None:
        files = _dockerfiles()
        assert DOCKERFILE in files
        assert REPO_ROOT / "deploy" / "compose" / "samba" / "Dockerfile" in files
        result = subprocess.run(
            [str(HADOLINT), "--no-color", *map(str, files)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def test_hadolint_fails_an_unpinned_base_image(self, tmp_path: Path) -> None:
        """The lint can fail: `FROM python` without a tag is DL3006."""
        bad = tmp_path / "Dockerfile"
        bad.write_text("FROM python\nUSER 10001\n")
        result = subprocess.run(
            [str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 1
        assert "DL3006" in result.stdout


class TestImage:
    INSTRUCTIONS = _instructions(DOCKERFILE.read_text())

    def test_multi_stage_with_a_runtime_that_copies_only_the_venv(self) -> None:
        stages = [args for keyword, args in self.INSTRUCTIONS if keyword == "FROM"]
        assert len(stages) >= 2
        assert stages[-1].endswith("AS runtime")
        copies = [args for keyword, args in self.INSTRUCTIONS if keyword == "COPY"]
        assert "--from=build /app/.venv /app/.venv" in copies

    def test_runs_as_the_uid_compose_and_kubernetes_expect(self) -> None:
        (user,) = [args for keyword, args in self.INSTRUCTIONS if keyword == "USER"]
        assert user == "10001:10001"
        for service in ComposeFile().workers():
            assert ComposeFile().services[service]["user"] == user

    def test_odbc_drivers_and_ldap_libraries_are_installed(self) -> None:
        runs = " ".join(args for keyword, args in self.INSTRUCTIONS if keyword == "RUN")
        for package in ("unixodbc", "tdsodbc", "odbc-postgresql", "libldap-2.5-0", "tini"):
            assert re.search(rf"\b{re.escape(package)}\b", runs), package
        # FreeTDS and psqlODBC registered under the names the settings use.
        assert "odbcinst -q -d -n FreeTDS" in runs
        assert 'odbcinst -q -d -n "PostgreSQL Unicode"' in runs

    def test_microsofts_driver_is_a_build_argument_that_needs_the_eula(self) -> None:
        args = [args for keyword, args in self.INSTRUCTIONS if keyword == "ARG"]
        assert "MSODBCSQL18=no" in args
        text = DOCKERFILE.read_text()
        assert "--build-arg MSODBCSQL18=accept-eula" in text
        assert "ACCEPT_EULA=Y" in text
        assert "msodbcsql18" in text

    def test_it_says_why_one_image(self) -> None:
        assert "One image, not one per worker" in DOCKERFILE.read_text()

    @pytest.mark.parametrize("excluded", [".stack", ".venv", ".git", "deploy/compose/secrets"])
    def test_the_build_context_leaves_out_state_and_secrets(self, excluded: str) -> None:
        ignored = (REPO_ROOT / ".dockerignore").read_text().split()
        assert excluded in ignored
