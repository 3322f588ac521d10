"""ERP connection strings: ``ca_file`` reaches the driver or is refused, and no driver is
asked to encrypt without verifying the server's certificate."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from indutech_common.odbc import (
    freetds_conf,
    freetds_section,
    odbc_connection_string,
    use_freetds_conf,
)
from indutech_common.settings import OdbcSourceSettings

CA = Path("/etc/indutech/ca/ca.crt")


def parse(connection_string: str) -> dict[str, str]:
    """key=value;… with {braced} values, keys case-insensitive as ODBC reads them."""
    pairs: dict[str, str] = {}
    rest = connection_string
    while rest:
        key, _, rest = rest.partition("=")
        if rest.startswith("{"):
            end = rest.index("};") if "};" in rest else len(rest) - 1
            value, rest = rest[1:end], rest[end + 2 :]
        else:
            value, _, rest = rest.partition(";")
        pairs[key.strip().lower()] = value
    return pairs


def mssql(driver: str, ca_file: Path | None) -> OdbcSourceSettings:
    return OdbcSourceSettings(
        dialect="mssql", odbc_driver=driver, host="erp.corp", port=1433, ca_file=ca_file
    )


class TestRefusals:
    @pytest.mark.parametrize("driver", ["FreeTDS", "/usr/lib/x86_64-linux-gnu/odbc/libtdsodbc.so"])
    def test_freetds_without_a_ca_file_is_refused(self, driver: str) -> None:
        """Without a CA file FreeTDS encrypts but verifies nothing: refused at start-up."""
        with pytest.raises(ValidationError, match=r"Set ERP__CA_FILE"):
            mssql(driver, None)

    def test_a_ca_file_driver_18_would_ignore_is_refused(self) -> None:
        with pytest.raises(ValidationError, match=r"takes no CA file.*update-ca-certificates"):
            mssql("ODBC Driver 18 for SQL Server", CA)


class TestFreeTds:
    def test_the_ca_file_reaches_freetds_through_its_own_section(self) -> None:
        """The string names a freetds.conf section; that section holds host, port, required
        encryption, the CA file and the host name check."""
        settings = mssql("FreeTDS", CA)
        pairs = parse(odbc_connection_string(settings))
        assert pairs["servername"] == freetds_section(settings)
        assert "server" not in pairs
        assert "encryption" not in pairs, "TLS settings live in the section, with the CA"
        conf = freetds_conf(settings)
        assert conf.startswith(f"[{freetds_section(settings)}]\n")
        lines = {line.strip() for line in conf.splitlines()}
        assert {
            "host = erp.corp",
            "port = 1433",
            "encryption = require",
            f"ca file = {CA}",
            "check certificate hostname = yes",
        } <= lines

    def test_the_section_file_is_private_and_freetds_is_pointed_at_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FREETDSCONF", "/elsewhere/freetds.conf")
        path = use_freetds_conf(mssql("FreeTDS", CA), tmp_path)
        assert os.environ["FREETDSCONF"] == str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f"ca file = {CA}" in path.read_text()

    def test_a_value_that_would_inject_a_setting_is_refused(self) -> None:
        settings = mssql("FreeTDS", Path("/ca.crt\n\tcheck certificate hostname = no"))
        with pytest.raises(ValueError, match=r"cannot be written to freetds\.conf"):
            freetds_conf(settings)


class TestDriver18:
    def test_encrypts_and_verifies_against_the_trust_store(self) -> None:
        pairs = parse(odbc_connection_string(mssql("ODBC Driver 18 for SQL Server", None)))
        assert pairs["encrypt"] == "yes"
        assert pairs["trustservercertificate"] == "no"
        assert pairs["server"] == "tcp:erp.corp,1433"
        assert "encryption" not in pairs


class TestPostgres:
    def test_psqlodbc_verifies_host_and_ca(self) -> None:
        settings = OdbcSourceSettings(
            dialect="postgres", odbc_driver="PostgreSQL Unicode", ca_file=CA
        )
        pairs = parse(odbc_connection_string(settings))
        assert pairs["sslmode"] == "verify-full"
        assert pairs["pqopt"] == f"sslrootcert={CA}"
