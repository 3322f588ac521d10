"""ODBC connection strings for the ERP source, with the certificate always verified.

``mssql`` is SQL Server through Microsoft's ODBC Driver 18 (or FreeTDS);
``postgres`` is the local stand-in through psqlODBC. The same string serves
pyodbc in a thread (control queries) and arrow-odbc (bulk columnar reads).

Where ``ca_file`` goes, per driver (it must reach the driver, or it is refused):

- psqlODBC: ``pqopt={sslrootcert=…}`` with ``SSLMode=verify-full`` (libpq checks CA and host).
- FreeTDS (1.3, Debian's tdsodbc): its connection string has no CA keyword, and without a
  CA file it encrypts but checks no certificate at all. So a CA file is required, and it goes
  in a ``freetds.conf`` section this module writes (``ca file``, ``check certificate
  hostname = yes``, ``encryption = require``) that the string names with ``Servername``;
  ``FREETDSCONF`` points FreeTDS at that file (``use_freetds_conf``).
- ODBC Driver 18: no CA keyword either; it verifies against the system trust store
  (``Encrypt=yes;TrustServerCertificate=no``). A ``ca_file`` would be silently ignored, so
  it is refused: install the CA in the trust store (``update-ca-certificates``) instead.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from indutech_common.settings import OdbcSourceSettings

_NEEDS_BRACES = frozenset(";{}=")
FREETDS_TDS_VERSION = "7.4"


def odbc_value(value: str) -> str:
    """Quote a value for an ODBC connection string where it needs it: braces, '}' doubled.

    Plain values stay bare, because some drivers (psqlODBC for Uid) keep the braces.
    """
    if value != value.strip() or any(ch in _NEEDS_BRACES for ch in value):
        return "{" + value.replace("}", "}}") + "}"
    return value


def is_freetds(driver: str) -> bool:
    """FreeTDS by its registered name ('FreeTDS') or its library (libtdsodbc.so)."""
    lowered = driver.lower()
    return "freetds" in lowered or "tdsodbc" in lowered


def tls_refusal(*, dialect: str, driver: str, ca_file: Path | None) -> str | None:
    """Why these settings would not give a verified TLS connection (None: they do)."""
    if dialect != "mssql":
        return None
    if is_freetds(driver):
        if ca_file is None:
            return (
                "FreeTDS checks the SQL Server certificate only against a CA file; without one "
                "it would encrypt without verifying anyone. Set ERP__CA_FILE to the CA that "
                "signed the server's certificate."
            )
        return None
    if ca_file is not None:
        return (
            f"{driver} takes no CA file: it verifies the server against the system trust "
            "store, so ERP__CA_FILE would be ignored. Install the CA there "
            "(update-ca-certificates) and unset ERP__CA_FILE, or use FreeTDS."
        )
    return None


def freetds_section(settings: OdbcSourceSettings) -> str:
    """The freetds.conf section name of this server (stable for the same host and port)."""
    digest = hashlib.sha256(f"{settings.host}:{settings.port}".encode()).hexdigest()[:12]
    return f"indutech-erp-{digest}"


def freetds_conf(settings: OdbcSourceSettings) -> str:
    """A freetds.conf with one section: where the server is, and TLS verified by the CA."""
    if settings.ca_file is None:
        raise ValueError(tls_refusal(dialect="mssql", driver="FreeTDS", ca_file=None))
    for value in (settings.host, str(settings.ca_file)):
        if any(ch in value for ch in "\n\r;#"):
            raise ValueError(f"{value!r} cannot be written to freetds.conf")
    return (
        f"[{freetds_section(settings)}]\n"
        f"\thost = {settings.host}\n"
        f"\tport = {settings.port}\n"
        f"\ttds version = {FREETDS_TDS_VERSION}\n"
        "\tencryption = require\n"
        f"\tca file = {settings.ca_file}\n"
        "\tcheck certificate hostname = yes\n"
    )


def use_freetds_conf(settings: OdbcSourceSettings, directory: Path | None = None) -> Path:
    """Write ``freetds_conf`` to a private file and point FreeTDS at it (``FREETDSCONF``,
    which FreeTDS reads at each login). Returns the file."""
    folder = Path(directory or tempfile.mkdtemp(prefix="indutech-freetds-"))
    path = folder / "freetds.conf"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(freetds_conf(settings))
    os.environ["FREETDSCONF"] = str(path)
    return path


def odbc_connection_string(settings: OdbcSourceSettings) -> str:
    refusal = tls_refusal(
        dialect=settings.dialect, driver=settings.odbc_driver, ca_file=settings.ca_file
    )
    if refusal:
        raise ValueError(refusal)
    password = settings.password.get_secret_value() if settings.password else ""
    common = {
        "Driver": odbc_value(settings.odbc_driver),
        "Uid": odbc_value(settings.user),
        "Pwd": odbc_value(password),
    }
    if settings.dialect == "postgres":
        parts = {
            **common,
            "Server": settings.host,
            "Port": str(settings.port),
            "Database": odbc_value(settings.database),
            "SSLMode": "verify-full",
            "ConnSettings": odbc_value("SET application_name='indutech'"),
        }
        if settings.ca_file:
            # psqlODBC hands libpq options through pqopt; libpq then verifies CA and host.
            parts["pqopt"] = odbc_value(f"sslrootcert={settings.ca_file}")
    elif is_freetds(settings.odbc_driver):
        # Host, port, encryption and the CA are in the freetds.conf section (use_freetds_conf):
        # if that file is not found, the name does not resolve and nothing connects.
        parts = {
            **common,
            "Servername": freetds_section(settings),
            "Database": odbc_value(settings.database),
            "TDS_Version": FREETDS_TDS_VERSION,
        }
    else:
        parts = {
            **common,
            "Server": f"tcp:{settings.host},{settings.port}",
            "Database": odbc_value(settings.database),
            "Encrypt": "yes",
            "TrustServerCertificate": "no",
            "LoginTimeout": str(settings.login_timeout_s),
        }
        # Driver 18 verifies against the system trust store: a private CA is installed
        # there (update-ca-certificates), never bypassed with TrustServerCertificate.
    return ";".join(f"{key}={value}" for key, value in parts.items()) + ";"
