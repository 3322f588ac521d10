"""The SQL the dialects generate: T-SQL parsed by sqlglot (no SQL Server runs here), PostgreSQL
shapes, and the chunk ranges that put every row in exactly one chunk."""

from __future__ import annotations

import re

import pytest
import sqlglot

from indutech_sql_backup.dialects import Column, MssqlDialect, PostgresDialect, TableInfo, TableRef
from indutech_sql_backup.dialects.mssql import SNAPSHOT_PREAMBLE
from indutech_sql_backup.engine import chunk_specs
from indutech_sql_backup.errors import ChangeTrackingError

TABLE = TableInfo(
    ref=TableRef("sales", "Order Lines"),
    columns=(
        Column("order_id", "bigint", nullable=False),
        Column("line_no", "int", nullable=False),
        Column("amount", "decimal(18,2)"),
        Column("notes", "nvarchar(max)"),
        Column("picture", "varbinary(max)"),
        Column("placed_at", "datetimeoffset(7)"),
        Column("changed", "datetime2(7)"),
        Column("ext_id", "uniqueidentifier"),
        Column("row_version", "rowversion", nullable=False),
    ),
    key=("order_id", "line_no"),
    watermark="row_version",
)


def parse_tsql(sql: str) -> list[sqlglot.exp.Expr]:
    """Parse generated T-SQL. sqlglot 30 does not know ``SET TRANSACTION ISOLATION LEVEL``:
    that fixed preamble is compared as text, everything generated after it is parsed."""
    if sql.startswith(SNAPSHOT_PREAMBLE):
        sql = sql.removeprefix(SNAPSHOT_PREAMBLE)
    # Nor CHANGETABLE(CHANGES t, v): that one table source (checked as text by the delta
    # test) is replaced by a placeholder table; the rest of the statement is parsed.
    sql = re.sub(r"CHANGETABLE\(CHANGES [^,]+, CAST\(\? AS BIGINT\)\)", "changes_placeholder", sql)
    statements = [s for s in sqlglot.parse(sql, read="tsql") if s is not None]
    assert statements, sql
    return statements


class TestMssqlDialect:
    @pytest.mark.parametrize(
        "query",
        [
            MssqlDialect().list_tables(),
            MssqlDialect().list_columns(TABLE.ref),
            MssqlDialect().primary_key(TABLE.ref),
            MssqlDialect().boundaries(TABLE, 250_000),
            MssqlDialect().position(),
            MssqlDialect().chunk(TABLE, "10", "20"),
            MssqlDialect().chunk(TABLE, None, None),
            MssqlDialect().lob_lengths(TABLE, MssqlDialect().range_predicate(TABLE, "1", None)),
        ],
    )
    def test_generated_tsql_parses(self, query: object) -> None:
        """Every catalogue, chunk and position query is valid T-SQL for sqlglot."""
        sql = query.sql  # type: ignore[attr-defined]
        parse_tsql(sql)
        assert sql.count("?") == len(query.params)  # type: ignore[attr-defined]

    def test_chunk_runs_under_snapshot_isolation_in_key_order(self) -> None:
        query = MssqlDialect().chunk(TABLE, "10", "20")
        statements = parse_tsql(query.sql)
        assert "SNAPSHOT" in query.sql
        select = statements[-1]
        assert isinstance(select, sqlglot.exp.Select)
        assert [o.this.name for o in select.args["order"].expressions] == ["order_id", "line_no"]
        assert query.params == ("10", "20")
        assert "[sales].[Order Lines]" in query.sql

    def test_types_are_read_exactly(self) -> None:
        """datetimeoffset as UTC at its own precision (7 digits: no rounding to µs), datetime2
        as it is, uniqueidentifier text, rowversion bigint."""
        sql = MssqlDialect().select_list(TABLE)
        assert "CAST(SWITCHOFFSET([placed_at], '+00:00') AS DATETIME2(7))" in sql
        assert "[changed]" in sql
        assert "CAST([changed]" not in sql
        assert "CAST([row_version] AS BIGINT)" in sql
        assert "[amount]" in sql
        assert "CAST([amount]" not in sql

    def test_delta_reads_rowversion_and_change_tracking_deletes(self) -> None:
        query = MssqlDialect().delta(TABLE, "1234:0x99")
        statements = parse_tsql(query.sql)
        union = statements[-1]
        assert isinstance(union, sqlglot.exp.Union)
        assert "CHANGETABLE(CHANGES [sales].[Order Lines]" in query.sql
        assert "SYS_CHANGE_OPERATION = 'D'" in query.sql
        assert "CAST(NULL AS ROWVERSION)" not in query.sql  # not a castable type in T-SQL
        assert query.params == ("0x99", "1234")

    def test_delta_chunk_reads_its_key_range_of_upserts_and_deletes(self) -> None:
        """Both halves of a delta chunk are bounded by the same range of the leading key
        column, so a key's upsert and its deletes always land in the same part."""
        query = MssqlDialect().delta(TABLE, "1234:99", "10", "20")
        union = parse_tsql(query.sql)[-1]
        assert isinstance(union, sqlglot.exp.Union)
        assert "[order_id] > CAST(? AS BIGINT) AND [order_id] <= CAST(? AS BIGINT)" in query.sql
        assert "ct.[order_id] > CAST(? AS BIGINT) AND ct.[order_id] <= CAST(? AS BIGINT)" in (
            query.sql
        )
        assert query.params == ("99", "10", "20", "1234", "10", "20")
        assert query.sql.count("?") == len(query.params)
        open_ended = MssqlDialect().delta(TABLE, "1234:99", "20", None)
        parse_tsql(open_ended.sql)
        assert open_ended.params == ("99", "20", "1234", "20")

    def test_delta_boundaries_split_the_changes_since_the_last_run(self) -> None:
        query = MssqlDialect().delta_boundaries(TABLE, "1234:99", 50_000)
        select = parse_tsql(query.sql)[-1]
        assert isinstance(select, sqlglot.exp.Select)
        assert "CHANGETABLE(CHANGES [sales].[Order Lines], CAST(? AS BIGINT)) AS ct" in query.sql
        assert "[row_version] >= CAST(CAST(? AS BIGINT) AS BINARY(8))" in query.sql
        assert "r.rn % 50000 = 0 AND r.v < r.last_v" in query.sql
        assert query.params == ("99", "1234")
        assert query.sql.count("?") == len(query.params)

    def test_min_valid_version_check_parses(self) -> None:
        """The TRUNCATE check: the table's CHANGE_TRACKING_MIN_VALID_VERSION, by object id."""
        query = MssqlDialect().delta_check(TABLE)
        select = parse_tsql(query.sql)[-1]
        assert isinstance(select, sqlglot.exp.Select)
        call = select.expressions[0]
        assert call.sql(dialect="tsql").upper().startswith("CHANGE_TRACKING_MIN_VALID_VERSION(")
        assert "OBJECT_ID(?)" in query.sql
        assert query.params == ("[sales].[Order Lines]",)

    @pytest.mark.parametrize(
        ("since", "min_valid", "possible"),
        [("100:5", 100, True), ("100:5", 99, True), ("100:5", 101, False), ("7:0", 0, True)],
    )
    def test_delta_is_possible_only_from_a_valid_version(
        self, since: str, min_valid: int, *, possible: bool
    ) -> None:
        """A stored version below the minimum valid one (TRUNCATE, retention): re-snapshot."""
        assert MssqlDialect().delta_possible(since, min_valid) is possible

    def test_change_tracking_off_is_an_error_not_a_silent_full(self) -> None:
        with pytest.raises(ChangeTrackingError, match="prepare-source"):
            MssqlDialect().delta_possible("100:5", None)

    def test_identifiers_are_quoted(self) -> None:
        assert MssqlDialect().quote("a]b") == "[a]]b]"
        quoted = MssqlDialect().table(TableRef("s", "x]; DROP TABLE y; --"))
        statements = parse_tsql("SELECT 1 FROM " + quoted)  # noqa: S608 - the point of the test
        assert len(statements) == 1

    def test_change_tracking_ddl_parses(self) -> None:
        for statement in MssqlDialect().enable_change_tracking("erp", TABLE.ref):
            assert statement.startswith("ALTER ")
        parse_tsql(MssqlDialect().enable_change_tracking("erp", TABLE.ref)[2])


ORDERS = TableInfo(
    ref=TableRef("erp", "orders"),
    columns=(
        Column("id", "bigint", nullable=False),
        Column("placed", "timestamp with time zone"),
        Column("row_version", "bigint", nullable=False),
    ),
    key=("id",),
    watermark="row_version",
)


class TestPostgresDialect:
    def test_queries_parse_as_postgres(self) -> None:
        table = TableInfo(
            ref=TableRef("erp", "orders"),
            columns=(
                Column("id", "bigint", nullable=False),
                Column("placed", "timestamp with time zone"),
                Column("ext", "uuid"),
                Column("row_version", "bigint", nullable=False),
            ),
            key=("id",),
            watermark="row_version",
        )
        dialect = PostgresDialect()
        for query in (
            dialect.chunk(table, "1", "9"),
            dialect.boundaries(table, 1000),
            dialect.delta(table, "10:20:15"),
            dialect.position(),
        ):
            sqlglot.parse_one(query.sql, read="postgres")
            assert query.sql.count("?") == len(query.params)
        assert "AT TIME ZONE 'UTC'" in dialect.select_list(table)

    def test_delta_chunk_bounds_upserts_and_deletes_and_emits_truncates(self) -> None:
        dialect = PostgresDialect()
        query = dialect.delta(ORDERS, "10:20:15", "100", "200")
        sqlglot.parse_one(query.sql, read="postgres")
        assert query.sql.count("?") == len(query.params)
        assert '"id" > CAST(? AS bigint) AND "id" <= CAST(? AS bigint)' in query.sql
        assert (
            "CAST(d.pk ->> 'id' AS bigint) > CAST(? AS bigint) AND "
            "CAST(d.pk ->> 'id' AS bigint) <= CAST(? AS bigint)"
        ) in query.sql
        assert "d.op = 'D'" in query.sql
        assert "SELECT 'T' AS _op" in query.sql
        assert "d.op = 'T'" in query.sql
        assert query.params == (
            "10:20:15",
            "10:20:15",
            "100",
            "200",
            "orders",
            "10:20:15",
            "100",
            "200",
            "orders",
            "10:20:15",
        )
        unbounded = dialect.delta(ORDERS, "10:20:15")
        sqlglot.parse_one(unbounded.sql, read="postgres")
        assert unbounded.sql.count("?") == len(unbounded.params) == 6

    def test_delta_boundaries_count_upserts_and_deletes(self) -> None:
        query = PostgresDialect().delta_boundaries(ORDERS, "10:20:15", 1000)
        sqlglot.parse_one(query.sql, read="postgres")
        assert "UNION ALL SELECT CAST(d.pk ->> 'id' AS bigint)" in query.sql
        assert "rn % 1000 = 0 AND v < top" in query.sql
        assert query.params == ("10:20:15", "10:20:15", "orders", "10:20:15")
        assert PostgresDialect().delta_check(ORDERS) is None

    def test_lob_lengths_of_a_delta_chunk_are_bounded_by_its_range(self) -> None:
        table = TableInfo(
            ref=ORDERS.ref,
            columns=(*ORDERS.columns, Column("notes", "text")),
            key=ORDERS.key,
            watermark=ORDERS.watermark,
        )
        query = PostgresDialect().lob_lengths_delta(table, "10:20:15", "100", None)
        sqlglot.parse_one(query.sql, read="postgres")
        assert query.params == ("10:20:15", "10:20:15", "100")

    def test_change_capture_logs_truncates(self) -> None:
        """A statement-level AFTER TRUNCATE trigger writes an op = 'T' marker to the log."""
        ddl = PostgresDialect().install_change_capture(TableRef("erp", "orders"), ("id",))
        text = "\n".join(ddl)
        assert "ADD COLUMN IF NOT EXISTS op text NOT NULL DEFAULT 'D'" in text
        assert (
            'CREATE TRIGGER "orders_log_truncate" AFTER TRUNCATE ON "erp"."orders" '
            'FOR EACH STATEMENT EXECUTE FUNCTION "erp".indutech_log_truncate()'
        ) in ddl
        assert "CAST('{}' AS jsonb), 'T'" in text


class TestChunkSpecs:
    def test_ranges_cover_everything_once(self) -> None:
        """(-inf, b1], (b1, b2], …, (bn, +inf): adjacent, no gap, no overlap."""
        specs = chunk_specs(["10", "20", "20", "30"])
        assert [(s.lo, s.hi) for s in specs] == [
            (None, "10"),
            ("10", "20"),
            ("20", "30"),
            ("30", None),
        ]
        assert [s.chunk for s in specs] == [0, 1, 2, 3]

    def test_small_table_is_one_chunk(self) -> None:
        assert [(s.lo, s.hi) for s in chunk_specs([])] == [(None, None)]
