"""The warehouse SQL, rendered for both dialects. No Redshift runs here: its statements are
checked as text with sqlglot's Redshift dialect and against Redshift's documented MERGE rules."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import expressions as exp

from indutech_iot_aggregator.sinks.sql import READINGS, TABLES, TICKETS, AggregateTable, Statements

STAGED = {
    TICKETS.name: "s3://lake/warehouse-staging/iot-aggregator/batch-1/tickets.parquet",
    READINGS.name: "s3://lake/warehouse-staging/iot-aggregator/batch-1/readings.parquet",
}
ROLE = "arn:aws:iam::123456789012:role/indutech-redshift-copy"


def parse(sql: str, dialect: str) -> exp.Expr:
    return sqlglot.parse_one(sql, read=dialect, error_level=sqlglot.ErrorLevel.RAISE)


class TestRedshift:
    def redshift(self) -> list[str]:
        st = Statements("rt", "redshift")
        return [
            *st.create_schema(),
            *(st.rs_create_stage(t) for t in TABLES),
            *(st.rs_copy_stage(t, uri=STAGED[t.name], iam_role=ROLE) for t in TABLES),
            *(st.rs_merge(t) for t in TABLES),
            *(st.rs_drop_stage(t) for t in TABLES),
            *(st.rs_finalize(t) for t in TABLES),
            *(st.rs_delete_range(t) for t in TABLES),
            st.rs_advance_offset(),
            st.rs_insert_offset(),
            st.rs_lock_offsets(),
            st.select_offsets(2, lock=True),
        ]

    def test_every_statement_parses_in_the_redshift_dialect(self) -> None:
        """DDL, staging, COPY, MERGE, finalize, offsets, rebuild: all valid Redshift to
        sqlglot."""
        for sql in self.redshift():
            parse(sql, "redshift")

    def test_bulk_load_is_copy_from_s3_parquet_then_merge(self) -> None:
        """Redshift has no COPY FROM STDIN, ON CONFLICT, arrays nor FOR UPDATE."""
        statements = self.redshift()
        text = "\n".join(statements)
        for absent in ("ON CONFLICT", "STDIN", "unnest", "[]", "FOR UPDATE", "ANY("):
            assert absent not in text
        copies = [s for s in statements if s.startswith("COPY")]
        assert len(copies) == 2
        for copy in copies:
            assert copy.endswith("FORMAT AS PARQUET")
            assert f"IAM_ROLE '{ROLE}'" in copy
            assert "FROM 's3://lake/warehouse-staging/" in copy
        assert sum(s.startswith("MERGE INTO") for s in statements) == 2

    def test_copy_refuses_what_could_break_out_of_its_literals(self) -> None:
        """COPY takes no parameters: the URI and the role are checked before interpolation."""
        st = Statements("rt", "redshift")
        with pytest.raises(ValueError, match="s3:// URI"):
            st.rs_copy_stage(TICKETS, uri="s3://lake/x' IAM_ROLE 'y", iam_role=ROLE)
        with pytest.raises(ValueError, match="IAM role"):
            st.rs_copy_stage(TICKETS, uri=STAGED[TICKETS.name], iam_role="arn' --")

    def test_varchar_counts_bytes_on_redshift(self) -> None:
        """256 characters of up to 4 bytes: VARCHAR(1024) there, VARCHAR(256) on PostgreSQL."""
        assert "customer_id VARCHAR(1024)" in Statements("rt", "redshift").create_schema()[1]
        assert "customer_id VARCHAR(256)" in Statements("rt", "postgres").create_schema()[1]

    @pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
    def test_merge_follows_redshift_rules(self, table: AggregateTable) -> None:
        """No alias on the target, bare column names in SET and INSERT, the whole key in ON,
        measures merged (sums add, extremes LEAST/GREATEST)."""
        st = Statements("rt", "redshift")
        merge = parse(st.rs_merge(table), "redshift")
        assert isinstance(merge, exp.Merge)
        target = merge.this
        assert isinstance(target, exp.Table)
        assert not target.alias
        on = merge.args["on"].sql()
        for column in table.key:
            assert f"s.{column}" in on
        (update,) = [w.args["then"] for w in merge.find_all(exp.When) if w.args.get("matched")]
        assert isinstance(update, exp.Update)
        for assignment in update.expressions:
            column = assignment.this
            assert isinstance(column, exp.Column)
            assert not column.table, f"{assignment.sql()}: a SET column names no table"
        set_clause = ", ".join(a.sql() for a in update.expressions)
        assert "LEAST(" in set_clause
        assert "GREATEST(" in set_clause


class TestPostgres:
    def test_every_statement_parses_in_the_postgres_dialect(self) -> None:
        st = Statements("rt", "postgres")
        for sql in [
            *st.create_schema(),
            *(st.pg_create_stage(t) for t in TABLES),
            *(st.pg_upsert(t) for t in TABLES),
            *(st.pg_finalize(t) for t in TABLES),
            *(st.pg_delete_range(t) for t in TABLES),
            st.pg_advance_offsets(),
            st.pg_insert_offsets(),
            st.select_offsets(2, lock=True),
        ]:
            parse(sql, "postgres")

    def test_upsert_adds_the_delta_to_the_stored_row(self) -> None:
        """ON CONFLICT on the whole key; sums add, extremes combine: a write is a merge."""
        sql = Statements("rt", "postgres").pg_upsert(TICKETS)
        assert "ON CONFLICT (window_start, window_end, customer_id, region, source_topic, " in sql
        assert "ticket_count = t.ticket_count + EXCLUDED.ticket_count" in sql
        assert "revenue_sum = t.revenue_sum + EXCLUDED.revenue_sum" in sql
        assert "latency_min_ms = LEAST(t.latency_min_ms, EXCLUDED.latency_min_ms)" in sql

    def test_offsets_move_only_from_the_expected_offset(self) -> None:
        """The compare-and-set that fences zombies and lost acknowledgements."""
        sql = Statements("rt", "postgres").pg_advance_offsets()
        assert "o.next_offset = c.expected" in sql
        assert "RETURNING" in sql

    def test_schema_must_be_an_identifier(self) -> None:
        """Only identifiers are interpolated: anything else is refused."""
        with pytest.raises(ValueError, match="identifier"):
            Statements("rt; DROP TABLE x", "postgres")

    def test_views_combine_partitions_with_average_latency(self) -> None:
        view = Statements("rt", "postgres").create_view(TICKETS)
        assert "SUM(ticket_count) AS ticket_count" in view
        assert "MIN(latency_min_ms)" in view
        assert "/ NULLIF(SUM(latency_count), 0) AS latency_avg_ms" in view
        assert "GROUP BY window_start, window_end, customer_id, region" in view
