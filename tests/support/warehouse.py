"""Whole tables read over asyncpg: the tests' and the demo's independent view of a database."""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from indutech_common.settings import WarehouseSettings
from indutech_common.warehouse import connect_warehouse


async def table_rows(
    settings: WarehouseSettings,
    schema: str,
    table: str,
    *,
    order_by: str,
    skip_columns: Collection[str] = (),
) -> list[asyncpg.Record]:
    """Every row in ``order_by`` order, as asyncpg decodes it (Decimal, str, bytes, datetime,
    UUID), with the columns in table order minus ``skip_columns``."""
    connection = await connect_warehouse(settings)
    try:
        columns = await connection.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            f'"{schema}"."{table}"',
        )
        names = ", ".join(f'"{c["attname"]}"' for c in columns if c["attname"] not in skip_columns)
        query = f'SELECT {names} FROM "{schema}"."{table}" ORDER BY {order_by}'  # noqa: S608
        return list(await connection.fetch(query))
    finally:
        await connection.close()
