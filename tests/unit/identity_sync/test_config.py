"""identity-sync's settings, mapping file and CLI: bad input fails at start, naming the field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ldap3
import pytest

from indutech_identity_sync.cli import main
from indutech_identity_sync.config import load_mapping
from indutech_identity_sync.errors import DirectoryWriteError, MappingError
from indutech_identity_sync.sinks.ldap import LdapWriter
from indutech_identity_sync.sources.ldap import read_member_ranges

EXAMPLE = Path(__file__).resolve().parents[3] / "services/identity-sync/mapping.example.toml"


class TestMappingFile:
    def test_example_mapping_loads(self) -> None:
        """The shipped example is valid and says on-prem wins by default."""
        mapping = load_mapping(EXAMPLE)
        assert mapping.default_authority == "onprem"
        assert mapping.authority("telephoneNumber") == "aws"
        assert mapping.authority("mail") == "onprem"
        assert "manager" in mapping.rules_for("user")
        assert set(mapping.rules_for("ou")) == {"description"}

    def test_bad_field_is_named(self, tmp_path: Path) -> None:
        """A wrong value names its dotted path in the file."""
        path = tmp_path / "m.toml"
        path.write_text(
            EXAMPLE.read_text().replace(
                'default_authority = "onprem"', 'default_authority = "both"'
            )
        )
        with pytest.raises(MappingError, match="default_authority"):
            load_mapping(path)

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """Broken TOML is reported with the file name."""
        path = tmp_path / "m.toml"
        path.write_text("onprem_root = [")
        with pytest.raises(MappingError, match="cannot read"):
            load_mapping(path)

    def test_suffix_needs_both_suffixes(self, tmp_path: Path) -> None:
        """A suffix transform without its suffixes is refused."""
        path = tmp_path / "m.toml"
        path.write_text(EXAMPLE.read_text().replace('aws_suffix = "@aws.indutech.test"\n', ""))
        with pytest.raises(MappingError, match="suffix"):
            load_mapping(path)


class TestCli:
    def test_help_lists_settings(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--help names every setting's env variable and the run modes."""
        with pytest.raises(SystemExit) as exited:
            main(["--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        for text in (
            "IDENTITY_SYNC_ONPREM__URL",
            "IDENTITY_SYNC_MAPPING_FILE",
            "--dry-run",
            "--allow-mass-delete",
        ):
            assert text in out

    def test_missing_settings_exit_2(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """Without the directories configured the CLI exits 2 naming the variables."""
        for name in list(os.environ):
            if name.startswith(("INDUTECH_", "IDENTITY_SYNC_")):
                monkeypatch.delenv(name)
        monkeypatch.setenv("IDENTITY_SYNC_MAPPING_FILE", str(tmp_path / "missing.toml"))
        assert main(["--once"]) == 2
        err = capsys.readouterr().err
        assert "IDENTITY_SYNC_ONPREM" in err
        assert "mapping_file" in err


class FakeConnection:
    """Answers base searches for ``member;range=lo-*`` from a list, ``step`` values a page."""

    def __init__(self, values: list[str], step: int) -> None:
        self.values = values
        self.step = step
        self.response: list[dict[str, Any]] = []
        self.asked: list[str] = []

    def search(self, dn: str, _filter: str, _scope: str, attributes: list[str]) -> bool:
        wanted = attributes[0]
        self.asked.append(wanted)
        low = int(wanted.split("=")[1].split("-")[0])
        high = low + self.step - 1
        last = high >= len(self.values) - 1
        key = f"member;range={low}-{'*' if last else high}"
        page = [v.encode() for v in self.values[low : high + 1]]
        self.response = [{"type": "searchResEntry", "dn": dn, "raw_attributes": {key: page}}]
        return True


class TestRangedRetrieval:
    def test_follows_ranges_to_the_end(self) -> None:
        """3,200 members served 1,500 a page (as AD does) are all read, in three requests."""
        values = [f"CN=u{i},OU=x" for i in range(3200)]
        connection = FakeConnection(values, step=1500)
        members = read_member_ranges(connection, "CN=g,OU=x", step=1500)
        assert members == values
        assert connection.asked == [
            "member;range=0-1499",
            "member;range=1500-*",
            "member;range=3000-*",
        ]


class TestNoPasswords:
    @pytest.mark.parametrize("attribute", ["unicodePwd", "userPassword", "UNICODEPWD"])
    def test_writer_refuses_password_attributes(self, attribute: str) -> None:
        """Whatever it is asked, the LDAP writer never sends a password attribute."""
        writer = LdapWriter(connection=None)
        with pytest.raises(DirectoryWriteError, match="password"):
            writer.add("user", "CN=x,OU=y", {attribute: ("secret",)})
        with pytest.raises(DirectoryWriteError, match="password"):
            writer.modify("CN=x,OU=y", {attribute: ("secret",)})

    @pytest.mark.parametrize(
        "attribute",
        [
            "unixUserPassword",
            "msSFU30Password",
            "ms-Mcs-AdmPwd",
            "msLAPS-Password",
            "msLAPS-EncryptedPassword",
            "msLAPS-EncryptedDSRMPasswordHistory",
            "msDS-ManagedPassword",
            "userPassword",
            "userPassword;binary",
            "supplementalCredentials",
        ],
    )
    def test_every_secret_is_refused_by_mapping_and_writer(
        self, attribute: str, tmp_path: Path
    ) -> None:
        """The deny-list covers the POSIX, SFU, LAPS (legacy and Windows) and gMSA secrets, in
        any case and with options: the mapping refuses them, and so does the writer."""
        path = tmp_path / "m.toml"
        path.write_text(EXAMPLE.read_text() + f'\n[attributes.x]\nonprem = "{attribute}"\n')
        with pytest.raises(MappingError, match="password attributes are never"):
            load_mapping(path)
        writer = LdapWriter(connection=None)
        for name in (attribute, attribute.upper()):
            with pytest.raises(DirectoryWriteError, match="password"):
                writer.modify("CN=x,OU=y", {name: ("secret",)})


class RecordingConnection:
    """Records the DNs an LdapWriter sends (every write succeeds)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, object]] = []
        self.result: dict[str, Any] = {"result": 0}
        self.response: list[dict[str, Any]] = []

    def modify(self, dn: str, changes: dict[str, Any]) -> bool:
        self.sent.append(("modify", dn, changes))
        return True

    def modify_dn(self, dn: str, new_rdn: str, new_superior: str) -> bool:
        self.sent.append(("move", dn, (new_rdn, new_superior)))
        return True

    def delete(self, dn: str) -> bool:
        self.sent.append(("delete", dn, None))
        return True


class TestDnValuesSent:
    @pytest.mark.parametrize(
        ("given", "sent"),
        [
            ("CN=#Lead,OU=y", "CN=\\#Lead,OU=y"),  # a leading '#' read as text is escaped
            ("CN=\\ Both\\ ,OU=y", "CN=\\ Both\\ ,OU=y"),
            ("CN=Trail\\20,OU=y", "CN=Trail\\ ,OU=y"),
            ("CN=G1 #Top,OU=y", "CN=G1 \\#Top,OU=y"),
        ],
    )
    def test_member_and_entry_dns_are_escaped(self, given: str, sent: str) -> None:
        """DNs with a leading '#' or leading/trailing spaces go out in RFC 4514 escaping,
        as member values and as the DN of the entry written."""
        connection = RecordingConnection()
        writer = LdapWriter(connection=connection)
        writer.modify_members(given, add=[given], remove=[])
        writer.delete(given)
        (op, dn, changes), (_, deleted, _) = connection.sent
        assert (op, dn, deleted) == ("modify", sent, sent)
        assert changes == {"member": [(ldap3.MODIFY_ADD, [sent])]}

    def test_a_dn_that_does_not_parse_is_a_refusal(self) -> None:
        """Not sent, and refused like a DC refusal (the object is quarantined, not the cycle)."""
        writer = LdapWriter(connection=RecordingConnection())
        with pytest.raises(DirectoryWriteError, match="must be escaped"):
            writer.delete("CN=a;b,OU=y")
