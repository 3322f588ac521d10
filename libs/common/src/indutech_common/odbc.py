"""ODBC connection strings for the ERP source, with the certificate always verified.

``mssql`` is SQL Server through Microsoft's ODBC Driver 18 (or FreeTDS);
``postgres`` is the local stand-in through psqlODBC. The same string serves
aioodbc (control queries) and arrow-odbc (bulk columnar reads).
"""

from __future__ import annotations

from indutech_common.settings import OdbcSourceSettings

_NEEDS_BRACES = frozenset(";{}=")


def odbc_value(value: str) -> str:
    """Quote a value for an ODBC connection string where it needs it: braces, '}' doubled.

    Plain values stay bare, because some drivers (psqlODBC for Uid) keep the braces.
    """
    if value != value.strip() or any(ch in _NEEDS_BRACES for ch in value):
        return "{" + value.replace("}", "}}") + "}"
    return value


def odbc_connection_string(settings: OdbcSourceSettings) -> str:
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
    elif "FreeTDS" in settings.odbc_driver:
        parts = {
            **common,
            "Server": settings.host,
            "Port": str(settings.port),
            "Database": odbc_value(settings.database),
            "TDS_Version": "7.4",
            "Encryption": "require",
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
