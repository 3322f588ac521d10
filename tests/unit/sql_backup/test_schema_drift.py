"""Schema drift between a table and the run a delta would continue: found at plan time,
turned into a re-snapshot (or refused with SCHEMA_DRIFT=fail); restore and verify refuse a
chain whose deltas differ from the run they continue. Pure logic, with the planner's fakes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import structlog.testing

from indutech_common.schemas.sql_backup import ColumnSpec, Manifest, PartRecord
from indutech_sql_backup.dialects import Column, MssqlDialect, TableInfo
from indutech_sql_backup.errors import KeyNotUniqueError, SchemaDriftError
from indutech_sql_backup.sinks import chain_problems, restore_base
from indutech_sql_backup.sinks.store import schema_drift
from tests.unit.sql_backup.test_delta_planning import (
    DAY1,
    TABLE,
    FakeSource,
    engine_for,
    full_manifest,
)
from tests.unit.sql_backup.test_dialects import parse_tsql

ADDED = replace(TABLE, columns=(*TABLE.columns, Column("color", "nvarchar(20)")))
DROPPED = replace(TABLE, columns=tuple(c for c in TABLE.columns if c.name != "total"))
RETYPED = replace(
    TABLE,
    columns=tuple(
        Column("total", "decimal(20,4)") if c.name == "total" else c for c in TABLE.columns
    ),
)


class TestSchemaDrift:
    def test_same_columns_in_another_order_are_no_drift(self) -> None:
        assert schema_drift(TABLE.columns, TABLE.key, TABLE.columns[::-1], TABLE.key) is None

    @pytest.mark.parametrize(
        ("after", "said"),
        [
            (ADDED, "added color"),
            (DROPPED, "dropped total"),
            (RETYPED, "changed total: decimal(18,2) → decimal(20,4)"),
            (
                replace(TABLE, columns=(Column("id", "bigint"), *TABLE.columns[1:])),
                "changed id: bigint NOT NULL → bigint",
            ),
            (replace(TABLE, key=("id", "total")), "key (id) → (id, total)"),
        ],
    )
    def test_each_kind_of_change_is_named(self, after: TableInfo, said: str) -> None:
        drift = schema_drift(TABLE.columns, TABLE.key, after.columns, after.key)
        assert drift is not None
        assert drift.describe() == said


class TestPlanning:
    @pytest.mark.parametrize(
        ("table", "field", "names"),
        [(ADDED, "added", ["color"]), (DROPPED, "dropped", ["total"]), (RETYPED, "changed", [])],
    )
    async def test_a_changed_table_gets_a_resnapshot_delta_with_its_new_columns(
        self, table: TableInfo, field: str, names: list[str]
    ) -> None:
        """The delta re-reads the whole table in full chunks, with the columns it has now,
        says why in the plan, and logs the columns that changed."""
        source = FakeSource(min_valid=100, boundaries=["10"])
        engine, _ = engine_for("mssql", source, chunk_rows=1000, delta_chunk_rows=7)
        with structlog.testing.capture_logs() as logs:
            plan, status = await engine.plan(table, kind="delta", day=DAY1)
        assert status == "new"
        assert plan.snapshot
        assert plan.snapshot_reason is not None
        assert plan.snapshot_reason.startswith("schema changed since 2026-03-01")
        assert [c.name for c in plan.columns] == [c.name for c in table.columns]
        assert plan.position_from == "100:500", "the chain goes on position to position"
        assert not any("MIN_VALID" in q.sql for q in source.queries)
        assert "% 1000 = 0" in source.queries[-1].sql, "chunked like a full"
        [event] = [e for e in logs if e["event"] == "schema_drift"]
        assert event["action"] == "snapshot"
        assert event["table"] == "sales.orders"
        if names:
            assert event[field] == names
        else:
            assert event["changed"] == ["total: decimal(18,2) → decimal(20,4)"]

    async def test_with_schema_drift_fail_the_table_is_refused_and_nothing_written(self) -> None:
        source = FakeSource(min_valid=100, boundaries=["10"])
        engine, store = engine_for("mssql", source, schema_drift="fail")
        with pytest.raises(SchemaDriftError, match=r"added color.*--kind full"):
            await engine.plan(ADDED, kind="delta", day=DAY1)
        assert not store.objects
        assert await engine.plan_or_skip(ADDED, kind="delta", day=DAY1) is None
        assert [(s.table, s.error) for s in engine.skipped] == [
            ("sales.orders", "SchemaDriftError")
        ]

    async def test_an_unchanged_table_gets_a_delta_of_changes(self) -> None:
        source = FakeSource(min_valid=100, boundaries=["40"])
        engine, _ = engine_for("mssql", source)
        plan, _ = await engine.plan(TABLE, kind="delta", day=DAY1)
        assert plan.reads_changes
        assert plan.snapshot_reason is None


class KeyCheckSource(FakeSource):
    def __init__(self, duplicates: int, nulls: int) -> None:
        super().__init__(min_valid=100, boundaries=["10"])
        self.dialect = MssqlDialect()
        self.answer = (duplicates, nulls)

    def fetch(self, connection: object, query: object) -> list[tuple[object, ...]]:
        rows = super().fetch(connection, query)  # type: ignore[arg-type]
        if "HAVING count(*) > 1" in self.queries[-1].sql:
            return [self.answer]
        return rows


class TestKeyOverride:
    @pytest.mark.parametrize(("duplicates", "nulls"), [(3, 0), (0, 2)])
    async def test_a_key_override_that_is_not_a_key_is_refused_at_plan_time(
        self, duplicates: int, nulls: int
    ) -> None:
        source = KeyCheckSource(duplicates, nulls)
        table = replace(TABLE, key_from="override")
        engine, store = engine_for("mssql", source)
        with pytest.raises(KeyNotUniqueError, match=r"key override \(id\) of sales.orders"):
            await engine.plan(table, kind="full", day=DAY1)
        assert not store.objects, "no plan is written"
        parse_tsql(source.queries[0].sql)  # the check is plain SQL SQL Server runs

    async def test_a_unique_override_plans(self) -> None:
        source = KeyCheckSource(0, 0)
        engine, _ = engine_for("mssql", source)
        plan, _ = await engine.plan(replace(TABLE, key_from="override"), kind="full", day=DAY1)
        assert plan.key_from == "override"
        assert "HAVING count(*) > 1" in source.queries[0].sql

    async def test_a_primary_key_is_not_checked(self) -> None:
        source = KeyCheckSource(5, 5)
        engine, _ = engine_for("mssql", source)
        await engine.plan(TABLE, kind="full", day=DAY1)
        assert not any("HAVING" in q.sql for q in source.queries)


def _delta(previous: Manifest, columns: tuple[ColumnSpec, ...], *, snapshot: bool) -> Manifest:
    plan = previous.plan.model_copy(
        update={
            "kind": "delta",
            "day": DAY1,
            "columns": columns,
            "snapshot": snapshot,
            "position_from": previous.plan.position_to,
            "position_to": "300:900",
        }
    )
    return previous.model_copy(update={"plan": plan})


class TestChainProblems:
    def test_a_delta_with_other_columns_than_its_full_is_named(self) -> None:
        """A chain written before drift was detected: restore must stop, saying which day."""
        full = full_manifest("postgres")
        extra = (*full.plan.columns, ColumnSpec(name="color", source_type="text", nullable=True))
        runs = [full, _delta(full, extra, snapshot=False)]
        [problem] = chain_problems(runs)
        assert "the delta of 2026-03-02" in problem
        assert "added color" in problem
        assert restore_base(runs) == 0

    def test_a_resnapshot_starts_the_restore_with_its_columns(self) -> None:
        full = full_manifest("postgres")
        extra = (*full.plan.columns, ColumnSpec(name="color", source_type="text", nullable=True))
        runs = [full, _delta(full, extra, snapshot=True)]
        assert chain_problems(runs) == []
        assert restore_base(runs) == 1

    def test_a_part_with_other_columns_than_its_plan_is_named(self) -> None:
        full = full_manifest("postgres")
        stored = tuple(
            ColumnSpec(name=n, source_type="", nullable=True) for n in ("id", "row_version")
        )
        part = PartRecord(
            plan_id=full.plan.plan_id,
            chunk=0,
            key="k/part-00000.parquet",
            rows=1,
            bytes=1,
            checksum="c",
            sha256="s",
            arrow_schema=stored,
        )
        [problem] = chain_problems([full.model_copy(update={"parts": (part,)})])
        assert "k/part-00000.parquet holds columns ['id', 'row_version']" in problem
