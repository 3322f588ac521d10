"""The type matrix for real: every common PostgreSQL type goes ERP (psqlODBC) → Parquet on
MinIO → restore into the warehouse, and comes back equal value for value; ``verify`` says
"equal" only then. Values psqlODBC would silently change are refused naming the column."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pyarrow as pa
import pytest

from indutech_common.s3 import create_s3_client
from indutech_common.schemas.sql_backup import BackupDir
from indutech_common.settings import WarehouseSettings
from indutech_common.warehouse import connect_warehouse
from indutech_sql_backup.dialects import PostgresDialect, TableRef
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.restore import Restorer
from indutech_sql_backup.sinks import PartWriter, read_part
from indutech_sql_backup.sources import OdbcSource
from indutech_sql_backup.verify import verify
from tests.integration.sql_backup.conftest import Erp, erp_database, settings_for
from tests.support.stack import StackSettings

DAY0 = date(2026, 3, 1)
DAY1 = date(2026, 3, 2)
BIG_TEXT = "repeat('x€ ', 400000)"  # 2 MB of UTF-8: "text over 1 MB"

# (PostgreSQL type, SQL literals of rows 1 and 2; row 3 is all NULL, row 4 gets the delta)
MATRIX: list[tuple[str, tuple[str, str]]] = [
    ("smallint", ("-32768", "32767")),
    ("integer", ("-2147483648", "2147483647")),
    ("bigint", ("-9223372036854775808", "9223372036854775807")),
    ("real", ("'0.1'", "'3.4028235e38'")),
    ("double precision", ("'0.1'", "'5e-324'")),
    ("numeric(10,2)", ("'12345678.90'", "'-0.01'")),
    ("numeric(38,10)", ("'1234567890123456789012345678.0123456789'", "'-0.0000000001'")),
    ("numeric", ("'1.23456789'", "'123456789012345678901234567890.1234567890123456789'")),
    ("numeric(50,5)", ("'123456789012345678901234567890123456789012345.12345'", "'NaN'")),
    ("money", ("'12.34'", "'-92233720368547758.08'")),
    ("boolean", ("true", "false")),
    ("date", ("'2026-01-02'", "'9999-12-31'")),
    ("time", ("'12:34:56.789012'", "'23:59:59.999999'")),
    ("time(3)", ("'12:34:56.789'", "'00:00:00'")),
    ("time with time zone", ("'12:34:56.5+02'", "'00:00:00+15:59'")),
    ("timestamp", ("'2026-01-02 03:04:05.678901'", "'0001-01-01 00:00:00'")),
    ("timestamp(0)", ("'2026-01-02 03:04:05'", "'9999-12-31 23:59:59'")),
    ("timestamptz", ("'2026-01-02 03:04:05.678901+02'", "'1900-01-01 00:00:00-03:30'")),
    ("interval", ("'1 year 2 mons 3 days 04:05:06.789'", "'-1 mons +2 days -00:00:01.5'")),
    ("uuid", ("'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", "'00000000-0000-0000-0000-000000000000'")),
    ("bytea", ("'\\x00ff10'", "''")),
    ("char(5)", ("'éa'", "''")),
    ("varchar(10)", ("'ééééééééé'", "'a\"b''c'")),
    ("text", (BIG_TEXT, "E'tab\\there\\nnew line'")),
    ("json", ('\'{"a": 1,  "b": [1, 2]}\'', "'[]'")),
    ("jsonb", ('\'{"b": [1, 2], "a": {"c": null}}\'', "'\"text\"'")),
    ("text[]", ('\'{a,"b c",NULL,"q\\""}\'', "'{}'")),
    ("integer[]", ("'{{1,2},{3,NULL}}'", "'{}'")),
    ("xml", ("'<a x=\"1\">é</a>'", "'text only'")),
    ("inet", ("'10.0.0.1/8'", "'::1'")),
]


def column(index: int) -> str:
    return f"c{index:02d}"


async def typed_texts(settings: WarehouseSettings, schema: str) -> tuple[list[str], list[Any]]:
    """(column types, rows with every value as PostgreSQL's own text), in id order: an
    exact comparison for every type (asyncpg would decode interval months as 30 days)."""
    connection = await connect_warehouse(settings)
    try:
        types = [
            r[0]
            for r in await connection.fetch(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                "$1::regclass AND attnum > 0 AND NOT attisdropped AND attname LIKE 'c%' "
                "ORDER BY attnum",
                f'"{schema}".types_matrix',
            )
        ]
        texts = ", ".join(f"CAST({column(i)} AS text)" for i in range(len(MATRIX)))
        rows = await connection.fetch(
            f'SELECT id, {texts} FROM "{schema}".types_matrix ORDER BY id'  # noqa: S608
        )
        return types, [tuple(r) for r in rows]
    finally:
        await connection.close()


async def create_matrix(stack: StackSettings, erp: Erp) -> OdbcSource:
    source = OdbcSource(stack.erp, PostgresDialect())
    columns = ", ".join(f"{column(i)} {t}" for i, (t, _) in enumerate(MATRIX))
    row1 = ", ".join(v[0] for _, v in MATRIX)
    row2 = ", ".join(v[1] for _, v in MATRIX)
    nulls = ", ".join("NULL" for _ in MATRIX)
    table = f'"{erp.schema}".types_matrix'
    ref = TableRef(erp.schema, "types_matrix")
    await asyncio.to_thread(
        source.execute,
        [
            f'CREATE SCHEMA "{erp.schema}"',
            f"CREATE TABLE {table} (id integer PRIMARY KEY, {columns})",
            *PostgresDialect().install_change_capture(ref, ("id",)),
            f"INSERT INTO {table} VALUES (1, {row1}), (2, {row2}), (3, {nulls}), (4, {row1})",  # noqa: S608
        ],
    )
    return source


class TestTypeMatrix:
    @pytest.mark.timeout(120)
    async def test_every_type_round_trips_exactly_full_and_delta(
        self, stack: StackSettings, erp: Erp
    ) -> None:
        """One column per type of the matrix: the full backup verifies and restores equal to
        the source, value for value as PostgreSQL's text; a delta (an update of every
        column, a delete, an insert) restored as of its day is equal too."""
        source = await create_matrix(stack, erp)
        table = f'"{erp.schema}".types_matrix'
        ref = TableRef(erp.schema, "types_matrix")
        settings = settings_for(stack, erp)
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings, s3)
            tables = await engine.discover()
            await engine.backup(tables, kind="full", day=DAY0)
            report = await verify(engine, ref, day=None)
            assert report.ok, report.lines
            expected = {DAY0: await typed_texts(erp_database(stack), erp.schema)}
            sets = ", ".join(f"{column(i)} = src.{column(i)}" for i in range(len(MATRIX)))
            all_columns = ", ".join(column(i) for i in range(len(MATRIX)))
            await asyncio.to_thread(
                source.execute,
                [
                    f"UPDATE {table} AS t SET {sets} FROM {table} AS src "  # noqa: S608
                    "WHERE t.id = 4 AND src.id = 2",
                    f"DELETE FROM {table} WHERE id = 1",  # noqa: S608
                    f"INSERT INTO {table} SELECT 5, {all_columns} FROM {table} WHERE id = 2",  # noqa: S608
                ],
            )
            await engine.backup(tables, kind="delta", day=DAY1)
            expected[DAY1] = await typed_texts(erp_database(stack), erp.schema)
            restorer = Restorer(settings, s3)
            for day in (DAY0, DAY1):
                await restorer.restore(
                    ref, day=day, target=TableRef(erp.target_schema, "types_matrix"), replace=True
                )
                restored = await typed_texts(stack.warehouse, erp.target_schema)
                source_types, source_rows = expected[day]
                assert restored[0] == source_types, "restored column types differ"
                differing = {
                    type_name: [str(r[index + 1])[:80] for r in restored[1]]
                    for index, (type_name, _) in enumerate(MATRIX)
                    if [(r[0], r[index + 1]) for r in restored[1]]
                    != [(r[0], r[index + 1]) for r in source_rows]
                }
                assert not differing, f"types that differ after restore as of {day}: {differing}"
                assert [r[0] for r in restored[1]] == [r[0] for r in source_rows]
        text_column = [t for t, _ in MATRIX].index("text") + 1
        assert len(expected[DAY0][1][0][text_column]) > 1_000_000, "row 1 holds text over 1 MB"

    @pytest.mark.parametrize(
        ("type_name", "value"),
        [
            ("timestamp", "'infinity'"),
            ("timestamptz", "'-infinity'"),
            ("date", "'infinity'"),
            ("date", "'0044-03-15 BC'"),
            ("numeric(10,2)", "'NaN'"),
            ("time", "'24:00:00'"),
        ],
    )
    async def test_values_the_driver_would_change_stop_the_backup(
        self, stack: StackSettings, erp: Erp, type_name: str, value: str
    ) -> None:
        """psqlODBC turns these into other values (9999-12-31, today, 0, AD, midnight): the
        chunk fails naming the column, the table is skipped, and no manifest is written."""
        source = OdbcSource(stack.erp, PostgresDialect())
        await asyncio.to_thread(
            source.execute,
            [
                f'CREATE SCHEMA "{erp.schema}"',
                f'CREATE TABLE "{erp.schema}".special (id integer PRIMARY KEY, odd {type_name})',
                f'INSERT INTO "{erp.schema}".special VALUES (1, {value})',  # noqa: S608
            ],
        )
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings_for(stack, erp), s3)
            results = await engine.backup(await engine.discover(), kind="full", day=DAY0)
            keys = await engine.store.list_keys(erp.prefix)
        assert results == []
        [skipped] = engine.skipped
        assert skipped.table == f"{erp.schema}.special"
        assert "refuses column odd" in skipped.reason
        assert not any(k.endswith("_manifest.json") for k in keys)


class TestVerifyRestorability:
    async def test_a_part_restore_cannot_load_fails_verify_though_its_checksums_match(
        self, stack: StackSettings, erp: Erp
    ) -> None:
        """A part as an older sql-backup wrote it (an unconstrained numeric cut to
        decimal128(28,6)), with a manifest whose SHA-256 and checksum match it: integrity
        alone says "equal"; verify decodes it as restore does and reports the column."""
        source = OdbcSource(stack.erp, PostgresDialect())
        await asyncio.to_thread(
            source.execute,
            [
                f'CREATE SCHEMA "{erp.schema}"',
                f'CREATE TABLE "{erp.schema}".amounts (id integer PRIMARY KEY, amount numeric)',
                f'INSERT INTO "{erp.schema}".amounts VALUES (1, 1.23456789), (2, NULL)',  # noqa: S608
            ],
        )
        ref = TableRef(erp.schema, "amounts")
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings_for(stack, erp), s3)
            [(manifest, _)] = await engine.backup(await engine.discover(), kind="full", day=DAY0)
            assert (await verify(engine, ref, day=None, source=False)).ok
            [part] = manifest.parts
            data = await engine.store.get_bytes(part.key)
            assert data is not None
            old = read_part(data)
            old = old.set_column(
                1, "amount", old.column("amount").cast(pa.decimal128(28, 6), safe=False)
            )
            with PartWriter(old.schema) as writer:
                writer.write(old.to_batches()[0])
                size, sha256 = writer.finish()
                await engine.store.put_part(
                    part.key,
                    writer.path,
                    size=size,
                    sha256=sha256,
                    multipart_threshold=1 << 30,
                    part_bytes=1 << 24,
                )
                record = part.model_copy(
                    update={
                        "checksum": writer.checksum.hexdigest(),
                        "sha256": sha256.hex(),
                        "bytes": size,
                    }
                )
            directory = BackupDir.of(erp.prefix, manifest.plan)
            await engine.store.put(
                directory.manifest, manifest.model_copy(update={"parts": (record,)})
            )
            report = await verify(engine, ref, day=None, source=False)
        assert not report.ok
        [line] = [line for line in report.lines if line.startswith("MISMATCH")]
        assert "restore cannot load it" in line
        assert "column amount (numeric) is stored as decimal128(28, 6)" in line

    async def test_a_type_the_target_cannot_parse_back_fails_verify_until_it_exists(
        self, stack: StackSettings, erp: Erp
    ) -> None:
        """An enum travels as text and restore casts it back on the target: verify runs that
        cast there first, so a target without the type fails verify naming the column, and
        once the type exists there verify passes and the restore is equal."""
        source = OdbcSource(stack.erp, PostgresDialect())
        mood = f'"{erp.schema}".mood'
        await asyncio.to_thread(
            source.execute,
            [
                f'CREATE SCHEMA "{erp.schema}"',
                f"CREATE TYPE {mood} AS ENUM ('sad', 'ok', 'glad')",
                f'CREATE TABLE "{erp.schema}".feelings (id integer PRIMARY KEY, m {mood})',
                f"INSERT INTO \"{erp.schema}\".feelings VALUES (1, 'glad'), (2, NULL)",  # noqa: S608
            ],
        )
        ref = TableRef(erp.schema, "feelings")
        warehouse = await connect_warehouse(stack.warehouse)
        try:
            async with create_s3_client(stack.s3) as s3:
                engine = Engine(settings_for(stack, erp), s3)
                await engine.backup(await engine.discover(), kind="full", day=DAY0)
                report = await verify(engine, ref, day=None, source=False)
                assert not report.ok
                assert any(
                    "column m: the target cannot cast its text back" in line
                    for line in report.lines
                ), report.lines
                await warehouse.execute(f'CREATE SCHEMA "{erp.schema}"')
                await warehouse.execute(f"CREATE TYPE {mood} AS ENUM ('sad', 'ok', 'glad')")
                report = await verify(engine, ref, day=None)
                assert report.ok, report.lines
                target = TableRef(erp.target_schema, "feelings")
                await Restorer(settings_for(stack, erp), s3).restore(ref, day=None, target=target)
            rows = await warehouse.fetch(
                f'SELECT id, CAST(m AS text) FROM "{erp.target_schema}".feelings ORDER BY id'  # noqa: S608
            )
            assert [tuple(r) for r in rows] == [(1, "glad"), (2, None)]
        finally:
            await warehouse.execute(f'DROP SCHEMA IF EXISTS "{erp.schema}" CASCADE')
            await warehouse.close()
