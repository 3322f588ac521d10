"""The native stack's shell helpers: what they tell a new user when a part cannot start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.stack import REPO_ROOT

COMPONENTS = REPO_ROOT / "deploy" / "local" / "components"


def run_stack_function(
    tmp_path: Path, component: str, call: str
) -> subprocess.CompletedProcess[str]:
    """Source lib.sh and one component (functions only) and run ``call`` in bash."""
    script = f". deploy/local/lib.sh; . deploy/local/components/{component}.sh; {call}"
    return subprocess.run(
        ["bash", "-c", script],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "STACK_DIR": str(tmp_path / "stack"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# The first line is what a fresh machine without samba-vfs-modules printed on 2026-12-04.
ACL_XATTR_MISSING = (
    "Error loading module '/usr/lib/x86_64-linux-gnu/samba/vfs/acl_xattr.so': "
    "/usr/lib/x86_64-linux-gnu/samba/vfs/acl_xattr.so: cannot open shared object file: "
    "No such file or directory\nTraceback (most recent call last):\n"
)


class TestSambaFailureExplained:
    """A provisioning failure names the Debian package to install, not a traceback."""

    @pytest.mark.parametrize(
        ("log_text", "package"),
        [
            (ACL_XATTR_MISSING, "samba-vfs-modules"),
            (
                "ldb: unable to dlopen /usr/lib/x86_64-linux-gnu/samba/ldb/samba_dsdb.so : "
                "/usr/lib/x86_64-linux-gnu/samba/ldb/samba_dsdb.so: cannot open shared object file",
                "samba-dsdb-modules",
            ),
            (
                "FileNotFoundError: [Errno 2] No such file or directory: "
                "'/usr/share/samba/setup/provision_basedn.ldif'",
                "samba-ad-provision",
            ),
        ],
    )
    def test_missing_package_named(self, tmp_path: Path, log_text: str, package: str) -> None:
        log_file = tmp_path / "provision.log"
        log_file.write_text(log_text)
        done = run_stack_function(tmp_path, "samba", f"samba_missing_package {log_file}")
        assert done.stdout.strip() == package

    def test_unknown_failure_shows_the_log_tail(self, tmp_path: Path) -> None:
        log_file = tmp_path / "provision.log"
        log_file.write_text("line 1\nProvisioning failed: the realm is taken\n")
        done = run_stack_function(
            tmp_path, "samba", f"samba_explain_failure {log_file} 'provisioning corp'"
        )
        assert done.returncode == 1
        assert "the realm is taken" in done.stderr
        assert "provisioning corp failed (last lines above)" in done.stderr

    def test_missing_module_dies_with_the_install_command(self, tmp_path: Path) -> None:
        log_file = tmp_path / "provision.log"
        log_file.write_text(ACL_XATTR_MISSING)
        done = run_stack_function(
            tmp_path, "samba", f"samba_explain_failure {log_file} 'provisioning corp'"
        )
        assert done.returncode == 1
        assert "apt-get install --no-install-recommends samba-vfs-modules" in done.stderr
        assert "Traceback" not in done.stderr

    def test_every_samba_recommends_we_need_is_installed_by_name(self) -> None:
        # apt_ensure installs without Recommends: each part the DC loads is named.
        install_line = next(
            line
            for line in (COMPONENTS / "samba.sh").read_text().splitlines()
            if line.strip().startswith("apt_ensure samba ")
        )
        for package in ("samba-dsdb-modules", "samba-vfs-modules", "samba-ad-provision"):
            assert package in install_line.split()


class TestKafkaFormatNote:
    """Formatting Kafka storage warns only when another version really formatted it."""

    def test_new_stack_formats_without_a_warning(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        data.mkdir()  # the start creates the folder before formatting it
        done = run_stack_function(tmp_path, "kafka", f"kafka_reformat_note {data}")
        assert done.returncode == 0
        assert done.stdout == ""

    def test_storage_of_another_version_is_named(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        data.mkdir()
        (data / "meta.properties").write_text("version=1\n")
        (data / ".kafka-version").write_text("3.8.0\n")
        done = run_stack_function(tmp_path, "kafka", f"kafka_reformat_note {data}")
        assert done.stdout.startswith("Kafka storage was formatted by 3.8.0; formatting anew")
