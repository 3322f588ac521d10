"""Warehouse connections: Redshift in production, PostgreSQL locally, both through asyncpg.

The dialect switch records what differs (Redshift has no binary COPY FROM STDIN: bulk loads
go through S3); connections always verify the server's certificate and host name unless a
developer asks for ``sslmode=disable``.
"""

from __future__ import annotations

import asyncpg

from indutech_common.settings import TlsSettings, WarehouseSettings
from indutech_common.tls import create_client_ssl_context


def _ssl(settings: WarehouseSettings) -> object:
    if settings.sslmode == "disable":
        return False
    # Redshift and PostgreSQL 15 both speak TLS 1.2+; ask for 1.3 where the server offers it.
    return create_client_ssl_context(TlsSettings(ca_file=settings.ca_file, min_version="1.2"))


def _connect_kwargs(settings: WarehouseSettings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "database": settings.database,
        "user": settings.user,
        "password": settings.password.get_secret_value() if settings.password else None,
        "ssl": _ssl(settings),
        "timeout": settings.connect_timeout_s,
    }


async def connect_warehouse(settings: WarehouseSettings) -> asyncpg.Connection:
    return await asyncpg.connect(**_connect_kwargs(settings))


async def create_warehouse_pool(
    settings: WarehouseSettings, *, min_size: int = 1, max_size: int = 4
) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        **_connect_kwargs(settings), min_size=min_size, max_size=max_size
    )


def supports_copy_from_stdin(settings: WarehouseSettings) -> bool:
    """Redshift loads only ``COPY … FROM 's3://…'``; PostgreSQL takes binary COPY from us."""
    return settings.dialect == "postgres"
