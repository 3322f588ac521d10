"""The sql-backup benchmark's peer reads what the worker reads: the plan's key ranges, each
once, spread over as many psql processes as the worker has connections."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from bench.sql_backup import range_copy, share
from bench.stats import spread
from indutech_common.schemas.sql_backup import ChunkSpec, ColumnSpec, Plan


def plan_of(chunks: list[ChunkSpec], *, table: str = "order_lines") -> Plan:
    return Plan(
        plan_id="p",
        kind="full",
        database="erp",
        dialect="postgres",
        schema_name="sb",
        table=table,
        day=date(2026, 1, 1),
        columns=(
            ColumnSpec(name="order_id", source_type="bigint", nullable=False, arrow_type="int64"),
            ColumnSpec(name="line_no", source_type="integer", nullable=False, arrow_type="int32"),
        ),
        key=("order_id", "line_no"),
        key_from="primary key",
        watermark=None,
        chunk_column="order_id",
        chunks=tuple(chunks),
        position_from=None,
        position_to="1:1:",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


CHUNKS = [
    ChunkSpec(chunk=0, lo=None, hi="10"),
    ChunkSpec(chunk=1, lo="10", hi="20"),
    ChunkSpec(chunk=2, lo="20", hi="30"),
    ChunkSpec(chunk=3, lo="30", hi="40"),
    ChunkSpec(chunk=4, lo="40", hi=None),
]


class TestShare:
    @pytest.mark.parametrize("sessions", [1, 2, 3, 5, 7])
    def test_every_chunk_goes_to_exactly_one_session(self, sessions: int) -> None:
        """Each chunk is copied once, by one of ``sessions`` processes."""
        shares = share(CHUNKS, sessions)
        assert len(shares) == sessions
        assert sorted(c.chunk for mine in shares for c in mine) == [0, 1, 2, 3, 4]

    def test_chunks_are_dealt_in_turn(self) -> None:
        """Round-robin, like free slots taking the next equal-sized chunk."""
        assert [[c.chunk for c in mine] for mine in share(CHUNKS, 2)] == [[0, 2, 4], [1, 3]]


class TestRangeCopy:
    def test_bounds_are_the_workers_half_open_ranges(self) -> None:
        """``lo < key <= hi``, cast to the column's type, in key order."""
        sql = range_copy(plan_of(CHUNKS), CHUNKS[1])
        assert sql == (
            'COPY (SELECT * FROM "sb"."order_lines" WHERE "order_id" > CAST(\'10\' AS bigint) '
            'AND "order_id" <= CAST(\'20\' AS bigint) ORDER BY "order_id", "line_no") TO STDOUT;'
        )

    def test_open_ends_have_one_bound(self) -> None:
        """The first chunk has no lower bound, the last no upper one."""
        first = range_copy(plan_of(CHUNKS), CHUNKS[0])
        last = range_copy(plan_of(CHUNKS), CHUNKS[-1])
        assert "WHERE \"order_id\" <= CAST('10' AS bigint) ORDER BY" in first
        assert "WHERE \"order_id\" > CAST('40' AS bigint) ORDER BY" in last

    def test_a_single_unbounded_chunk_reads_everything(self) -> None:
        """A table of one chunk is copied whole."""
        sql = range_copy(
            plan_of([ChunkSpec(chunk=0, lo=None, hi=None)]), ChunkSpec(chunk=0, lo=None, hi=None)
        )
        assert "WHERE true ORDER BY" in sql

    def test_quotes_in_bounds_and_names_are_escaped(self) -> None:
        """A bound or a name with a quote cannot end the literal or identifier early."""
        chunk = ChunkSpec(chunk=1, lo="o'neil", hi=None)
        sql = range_copy(plan_of([chunk], table='odd"name'), chunk)
        assert "CAST('o''neil' AS bigint)" in sql
        assert '"sb"."odd""name"' in sql


class TestSpread:
    def test_min_median_max(self) -> None:
        """The three numbers every benchmark row keeps, in that order."""
        assert spread([3.0, 1.0, 2000.0]) == "min 1 / median 3 / max 2,000"
        assert spread([1.234, 1.5], 2) == "min 1.23 / median 1.37 / max 1.50"

    def test_no_runs_is_an_error(self) -> None:
        """A row without runs says so rather than printing nothing."""
        with pytest.raises(ValueError, match="no repeats"):
            spread([])
