"""The type matrix row by row: what each source type is read as, stored as and restored as,
or why it is refused. SQL Server has no server here: its rows are checked as generated T-SQL
parsed by sqlglot; the PostgreSQL rows also round-trip for real (integration test)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import pyarrow as pa
import pytest
import sqlglot

from indutech_common.schemas.sql_backup import ChunkSpec, ColumnSpec, Plan
from indutech_common.warehouse import BatchEncoder, TargetColumn
from indutech_sql_backup.dialects import Column, MssqlDialect, PostgresDialect, TableInfo, TableRef
from indutech_sql_backup.dialects.types import mssql_type, postgres_type, stored_type
from indutech_sql_backup.engine import arrow_schema_for
from indutech_sql_backup.errors import RestoreDecodeError, UnsupportedTypeError
from indutech_sql_backup.restore import column_loads, decode_part
from tests.unit.sql_backup.test_dialects import parse_tsql

# (SQL Server type as the catalogue query spells it, Parquet type, restored as, read as)
MSSQL_MATRIX: list[tuple[str, pa.DataType, str, str | None]] = [
    ("bit", pa.bool_(), "boolean", None),
    ("tinyint", pa.uint8(), "smallint", None),
    ("smallint", pa.int16(), "smallint", None),
    ("int", pa.int32(), "integer", None),
    ("bigint", pa.int64(), "bigint", None),
    ("decimal(18,2)", pa.decimal128(18, 2), "numeric(18,2)", None),
    ("numeric(38,10)", pa.decimal128(38, 10), "numeric(38,10)", None),
    ("money", pa.decimal128(19, 4), "numeric(19,4)", "CAST([c] AS DECIMAL(19, 4))"),
    ("smallmoney", pa.decimal128(10, 4), "numeric(10,4)", "CAST([c] AS DECIMAL(10, 4))"),
    ("real", pa.float32(), "real", None),
    ("float", pa.float64(), "double precision", None),
    ("date", pa.date32(), "date", None),
    ("time(0)", pa.time64("us"), "time", None),
    ("time(7)", pa.time64("ns"), "time", None),
    ("smalldatetime", pa.timestamp("us"), "timestamp", None),
    ("datetime", pa.timestamp("us"), "timestamp", "CAST([c] AS DATETIME2(3))"),
    ("datetime2(3)", pa.timestamp("us"), "timestamp", None),
    ("datetime2(7)", pa.timestamp("ns"), "timestamp", None),
    (
        "datetimeoffset(7)",
        pa.timestamp("ns", tz="UTC"),
        "timestamptz",
        "CAST(SWITCHOFFSET([c], '+00:00') AS DATETIME2(7))",
    ),
    (
        "datetimeoffset(3)",
        pa.timestamp("us", tz="UTC"),
        "timestamptz",
        "CAST(SWITCHOFFSET([c], '+00:00') AS DATETIME2(3))",
    ),
    ("char(10)", pa.string(), "varchar(10)", None),
    ("varchar(50)", pa.string(), "varchar(50)", None),
    ("varchar(max)", pa.string(), "text", None),
    ("nchar(10)", pa.string(), "varchar(10)", None),
    ("nvarchar(200)", pa.string(), "varchar(200)", None),
    ("nvarchar(max)", pa.string(), "text", None),
    ("sysname", pa.string(), "varchar(128)", None),
    ("text", pa.string(), "text", None),
    ("ntext", pa.string(), "text", "CAST([c] AS NVARCHAR(MAX))"),
    ("binary(16)", pa.binary(), "bytea", None),
    ("varbinary(100)", pa.binary(), "bytea", None),
    ("varbinary(max)", pa.binary(), "bytea", None),
    ("image", pa.binary(), "bytea", "CAST([c] AS VARBINARY(MAX))"),
    ("uniqueidentifier", pa.string(), "uuid", "LOWER(CAST([c] AS CHAR(36)))"),
    ("timestamp", pa.int64(), "bigint", "CAST([c] AS BIGINT)"),
    ("xml", pa.string(), "text", "CAST([c] AS NVARCHAR(MAX))"),
    ("hierarchyid", pa.string(), "text", "CAST([c] AS NVARCHAR(4000))"),
]

# (PostgreSQL type as format_type spells it, Parquet type, kept as text and cast back)
POSTGRES_MATRIX: list[tuple[str, pa.DataType, bool]] = [
    ("smallint", pa.int16(), False),
    ("integer", pa.int32(), False),
    ("bigint", pa.int64(), False),
    ("real", pa.float32(), False),
    ("double precision", pa.float64(), False),
    ("numeric(10,2)", pa.decimal128(10, 2), False),
    ("numeric(38,10)", pa.decimal128(38, 10), False),
    ("numeric", pa.string(), True),
    ("numeric(50,5)", pa.string(), True),
    ("money", pa.string(), True),
    ("boolean", pa.bool_(), False),
    ("date", pa.date32(), False),
    ("time without time zone", pa.time64("us"), False),
    ("time(3) without time zone", pa.time64("us"), False),
    ("time with time zone", pa.string(), True),
    ("timestamp without time zone", pa.timestamp("us"), False),
    ("timestamp(0) without time zone", pa.timestamp("us"), False),
    ("timestamp with time zone", pa.timestamp("us", tz="UTC"), False),
    ("interval", pa.string(), True),
    ("uuid", pa.string(), False),
    ("bytea", pa.binary(), False),
    ("character(5)", pa.string(), False),
    ("character varying(10)", pa.string(), False),
    ("text", pa.string(), False),
    ("json", pa.string(), True),
    ("jsonb", pa.string(), True),
    ("text[]", pa.string(), True),
    ("integer[]", pa.string(), True),
    ("xml", pa.string(), True),
    ("inet", pa.string(), True),
    ("erp.order_status", pa.string(), True),
]


def one_column(type_name: str, *, key_type: str = "int") -> TableInfo:
    return TableInfo(
        ref=TableRef("sales", "t"),
        columns=(Column("id", key_type, nullable=False), Column("c", type_name)),
        key=("id",),
    )


def plan_of(
    dialect: str, columns: list[tuple[str, str]], *, kind: Literal["full", "delta"] = "full"
) -> Plan:
    return Plan(
        plan_id="p",
        kind=kind,
        database="erp",
        dialect=dialect,
        schema_name="sales",
        table="t",
        day=datetime(2026, 3, 1, tzinfo=UTC).date(),
        columns=tuple(ColumnSpec(name=n, source_type=t, nullable=True) for n, t in columns),
        key=(columns[0][0],),
        key_from="primary key",
        watermark=None,
        chunk_column=columns[0][0],
        chunks=(ChunkSpec(chunk=0, lo=None, hi=None),),
        position_from=None,
        position_to="1:1",
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
    )


class TestMssqlMatrix:
    @pytest.mark.parametrize(("source_type", "arrow", "restored", "read"), MSSQL_MATRIX)
    def test_each_type_is_read_stored_and_restored_exactly(
        self, source_type: str, arrow: pa.DataType, restored: str, read: str | None
    ) -> None:
        """The row's Parquet and restore types; its chunk query and LOB measure are T-SQL that
        sqlglot parses, and the restore type is a PostgreSQL type."""
        row = mssql_type(source_type)
        assert (row.arrow, row.restore_type) == (arrow, restored)
        dialect = MssqlDialect()
        table = one_column(source_type)
        select = dialect.select_list(table)
        assert (read or "[c]") in select
        parse_tsql(dialect.chunk(table, "1", "2").sql)
        if table.columns[1].lob:
            parse_tsql(dialect.lob_lengths(table, None).sql)
        cast = sqlglot.parse_one(f"SELECT CAST(x AS {restored})", read="postgres")
        assert cast.find(sqlglot.exp.Cast) is not None

    @pytest.mark.parametrize(
        ("source_type", "fix"),
        [
            ("sql_variant", "one concrete type"),
            ("geography", "STAsBinary()"),
            ("geometry", "STSrid"),
            ("phone_number", "base SQL Server type"),
        ],
    )
    def test_types_without_an_exact_form_are_refused_naming_the_column(
        self, source_type: str, fix: str
    ) -> None:
        """Refused when the table is described (before any plan), with the column and the fix."""
        with pytest.raises(UnsupportedTypeError) as caught:
            MssqlDialect().check_columns(one_column(source_type))
        message = str(caught.value)
        assert "sales.t.c" in message
        assert fix in message
        assert "SQL_BACKUP_EXCLUDE" in message

    def test_unicode_lobs_are_measured_for_utf8(self) -> None:
        """arrow-odbc fetches UTF-8: a UTF-16 DATALENGTH is scaled so the buffer fits."""
        sql = MssqlDialect().lob_lengths(one_column("nvarchar(max)"), None).sql
        assert "DATALENGTH([c])), 0) AS BIGINT) * 3 / 2" in sql
        sql = MssqlDialect().lob_lengths(one_column("varbinary(max)"), None).sql
        assert "* 3 / 2" not in sql


class TestPostgresMatrix:
    @pytest.mark.parametrize(("source_type", "arrow", "via_text"), POSTGRES_MATRIX)
    def test_each_type_has_its_exact_form(
        self, source_type: str, arrow: pa.DataType, via_text: bool
    ) -> None:
        """Stored type and text form as the matrix says; the chunk query parses."""
        row = postgres_type(source_type)
        assert (row.arrow, row.via_text) == (arrow, via_text)
        table = one_column(source_type)
        sqlglot.parse_one(PostgresDialect().chunk(table, "1", "2").sql, read="postgres")
        if table.columns[1].lob:
            sqlglot.parse_one(PostgresDialect().lob_lengths(table, None).sql, read="postgres")

    def test_jsonb_and_arrays_are_measured_as_text(self) -> None:
        """octet_length has no jsonb or array form: the text read is measured."""
        for type_name in ("jsonb", "text[]", "numeric"):
            sql = PostgresDialect().lob_lengths(one_column(type_name), None).sql
            assert 'octet_length(CAST("c" AS text))' in sql
        assert 'octet_length("c")' in PostgresDialect().lob_lengths(one_column("bytea"), None).sql

    def test_values_the_driver_changes_are_guarded(self) -> None:
        """infinity, NaN and 24:00 fail the read with the column named, in the column's type."""
        select = PostgresDialect().select_list(one_column("numeric(10,2)"))
        assert "CAST('NaN' AS numeric)" in select
        assert "refuses column c" in select
        assert select.endswith('AS numeric(10,2)) AS "c"')


class TestStoredTypes:
    @pytest.mark.parametrize(
        ("expected", "read", "ok"),
        [
            (pa.decimal128(10, 2), pa.decimal128(10, 2), True),
            (pa.decimal128(10, 2), pa.decimal128(28, 2), False),
            (pa.decimal128(28, 6), pa.decimal128(10, 6), True),
            (pa.decimal128(10, 2), pa.decimal128(10, 3), False),
            (pa.float32(), pa.float64(), False),
            (pa.float64(), pa.float32(), True),
            (pa.timestamp("us"), pa.timestamp("s"), True),
            (pa.time64("us"), pa.time32("ms"), True),
            (pa.string(), pa.float32(), False),
            (pa.int64(), pa.string(), False),
        ],
    )
    def test_only_value_preserving_reads_are_stored(
        self, expected: pa.DataType, read: pa.DataType, ok: bool
    ) -> None:
        assert stored_type(expected, read) is ok

    def test_a_driver_that_narrows_a_column_stops_the_chunk(self) -> None:
        """numeric(10,2) described as another decimal: the chunk fails naming the column."""
        table = one_column("numeric(10,2)", key_type="integer")
        read = pa.schema([pa.field("id", pa.int32()), pa.field("c", pa.decimal128(28, 6))])
        with pytest.raises(UnsupportedTypeError, match=r"sales\.t\.c \(numeric\(10,2\)\)"):
            arrow_schema_for(table, read, delta=False, dialect=PostgresDialect())


class TestRestoreDecoding:
    def test_text_forms_are_cast_back_on_the_server(self) -> None:
        plan = plan_of("postgres", [("id", "integer"), ("tags", "text[]"), ("name", "text")])
        schema = pa.schema([("id", pa.int32()), ("tags", pa.string()), ("name", pa.string())])
        loads = column_loads(plan, schema)
        assert [(c.target_type, c.via_text) for c in loads] == [
            ("integer", False),
            ("text[]", True),
            ("text", False),
        ]
        assert loads[1].value("s.") == 'CAST(s."tags" AS text[])'

    def test_a_part_written_with_a_narrowed_type_is_refused(self) -> None:
        """An unconstrained numeric stored as decimal128(28,6) (older versions) may have lost
        digits: decoding refuses it, naming the column and what to do."""
        plan = plan_of("postgres", [("id", "integer"), ("amount", "numeric")])
        data = pa.table(
            {
                "id": pa.array([1], pa.int32()),
                "amount": pa.array([1], pa.decimal128(28, 6)),
            }
        )
        with pytest.raises(RestoreDecodeError, match=r"amount.*new full backup"):
            decode_part(plan, data)

    def test_100ns_digits_are_refused_not_rounded(self) -> None:
        plan = plan_of("mssql", [("id", "int"), ("at", "datetime2(7)")])
        exact = pa.table(
            {
                "id": pa.array([1], pa.int32()),
                "at": pa.array([1_000], pa.timestamp("ns")),
            }
        )
        loads, rows = decode_part(plan, exact)
        assert loads[1].target_type == "timestamp"
        assert rows.column("at").type == pa.timestamp("us")
        assert rows.column("at").to_pylist() == [datetime(1970, 1, 1, 0, 0, 0, 1)]
        odd = exact.set_column(1, "at", pa.array([1_001], pa.timestamp("ns")))
        with pytest.raises(RestoreDecodeError, match="column at holds values with 100 ns"):
            decode_part(plan, odd)

    def test_extreme_dates_are_sent_as_postgresql_integers(self) -> None:
        """9999-12-31 goes on the wire as PostgreSQL's day number (2,921,939 days after
        2000-01-01), never through a client codec that could turn it into 'infinity'."""
        plan = plan_of("postgres", [("id", "integer"), ("d", "date")])
        data = pa.table(
            {
                "id": pa.array([1, 2], pa.int32()),
                "d": pa.array([datetime(9999, 12, 31).date(), None], pa.date32()),
            }
        )
        _, rows = decode_part(plan, data)
        encoder = BatchEncoder(rows.schema, [TargetColumn("id", "int4"), TargetColumn("d", "date")])
        wire = encoder.header() + encoder.encode(rows.to_batches()[0]) + encoder.trailer()
        first_row = (2).to_bytes(2, "big") + (4).to_bytes(4, "big") + (1).to_bytes(4, "big")
        first_row += (4).to_bytes(4, "big") + (2_921_939).to_bytes(4, "big")
        second_row = (2).to_bytes(2, "big") + (4).to_bytes(4, "big") + (2).to_bytes(4, "big")
        second_row += (-1).to_bytes(4, "big", signed=True)
        assert wire.endswith(first_row + second_row + b"\xff\xff")
