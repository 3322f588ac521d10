"""PostgreSQL: the ERP stand-in over ODBC (psqlODBC) and the warehouse over asyncpg, verify-full."""

from __future__ import annotations

import asyncio
import ssl
from decimal import Decimal
from pathlib import Path

import aioodbc
import asyncpg
import pyarrow as pa
import pytest
from arrow_odbc import read_arrow_batches_from_odbc

from indutech_common.odbc import odbc_connection_string
from indutech_common.settings import WarehouseSettings
from indutech_common.warehouse import connect_warehouse
from tests.support.proxy import tcp_forwarder
from tests.support.stack import StackSettings


class TestErpOverOdbc:
    async def test_query_over_odbc_with_verified_tls(self, stack: StackSettings) -> None:
        """aioodbc runs a query on erp; the session is encrypted."""
        dsn = odbc_connection_string(stack.erp)
        async with aioodbc.connect(dsn=dsn) as connection, connection.cursor() as cursor:
            await cursor.execute(
                "SELECT current_database(), CASE WHEN ssl THEN 'yes' END FROM pg_stat_ssl "
                "WHERE pid = pg_backend_pid()"
            )
            database, encrypted = await cursor.fetchone()
        assert database == "erp"
        assert encrypted == "yes"

    async def test_arrow_odbc_keeps_decimals(self, stack: StackSettings) -> None:
        """arrow-odbc reads NUMERIC(15,2) as decimal128(15,2), exactly."""
        dsn = odbc_connection_string(stack.erp)

        def read() -> pa.Table:
            reader = read_arrow_batches_from_odbc(
                query="SELECT CAST('1234567890123.45' AS NUMERIC(15,2)) AS amount",
                connection_string=dsn,
                batch_size=10,
            )
            return pa.Table.from_batches(list(reader), schema=reader.schema)

        table = await asyncio.to_thread(read)
        assert table.schema.field("amount").type == pa.decimal128(15, 2)
        assert table.column("amount")[0].as_py() == Decimal("1234567890123.45")

    async def test_wrong_ca_is_refused(self, stack: StackSettings, tmp_path: Path) -> None:
        """A CA that did not sign the server certificate makes the connection fail."""
        other_ca = tmp_path / "other-ca.crt"
        other_ca.write_text(ssl.get_server_certificate(("localhost", 9000)))  # a leaf, not our CA
        settings = stack.erp.model_copy(update={"ca_file": other_ca})
        with pytest.raises(Exception, match=r"(?i)certificate|ssl"):
            async with aioodbc.connect(dsn=odbc_connection_string(settings)):
                pass


class TestWarehouseOverAsyncpg:
    async def test_verify_full_connection(self, stack: StackSettings) -> None:
        """asyncpg connects to warehouse with verify-full and TLS 1.3, and sees the schemas."""
        connection = await connect_warehouse(stack.warehouse)
        try:
            version = await connection.fetchval(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
            schemas = await connection.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])",
                ["rt", "erp_raw", "erp"],
            )
        finally:
            await connection.close()
        assert version == "TLSv1.3"
        assert {row["nspname"] for row in schemas} == {"rt", "erp_raw", "erp"}

    async def test_wrong_host_name_is_refused(self, stack: StackSettings) -> None:
        """verify-full checks the host name: the real server reached as 127.0.0.4 is refused."""
        async with tcp_forwarder("127.0.0.4", stack.warehouse.host, stack.warehouse.port) as port:
            settings = WarehouseSettings.model_validate(
                {**stack.warehouse.model_dump(), "host": "127.0.0.4", "port": port}
            )
            with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
                await connect_warehouse(settings)

    async def test_wrong_password_is_refused(self, stack: StackSettings) -> None:
        settings = WarehouseSettings.model_validate(
            {**stack.warehouse.model_dump(), "password": "not-the-password"}
        )
        with pytest.raises(asyncpg.InvalidPasswordError):
            await connect_warehouse(settings)
