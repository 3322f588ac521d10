"""Which nights of a table come next: in order, from the earliest full, never across a gap."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from indutech_common.schemas.sql_backup import ChunkSpec, ColumnSpec, Kind, Manifest, Plan
from indutech_sql_to_redshift.errors import MissingNightError, NoBackupError
from indutech_sql_to_redshift.nights import Head, Night, Unfinished, pending

D0 = date(2026, 3, 1)


def night(
    day: int, kind: Kind, position_from: str | None, position_to: str, *, snapshot: bool = False
) -> Night:
    when = date(2026, 3, day)
    plan = Plan(
        plan_id=f"p{day}{kind}",
        kind=kind,
        database="erp",
        dialect="postgres",
        schema_name="sales",
        table="orders",
        day=when,
        columns=(ColumnSpec(name="id", source_type="bigint", nullable=False),),
        key=("id",),
        key_from="primary key",
        watermark="row_version",
        chunk_column="id",
        chunks=(ChunkSpec(chunk=0, lo=None, hi=None),),
        position_from=position_from,
        position_to=position_to,
        created_at=datetime(2026, 3, day, 2, tzinfo=UTC),
        snapshot=snapshot,
    )
    manifest = Manifest(plan=plan, parts=(), rows=0, bytes=0, completed_at=plan.created_at)
    return Night(manifest, f"s3://backup/{when}/{kind}/_manifest.json")


FULL = night(1, "full", None, "p1")
D2 = night(2, "delta", "p1", "p2")
D3 = night(3, "delta", "p2", "p3")
D4 = night(4, "delta", "p3", "p4")
CHAIN = [D4, FULL, D3, D2]  # listed in any order


def head_of(n: Night) -> Head:
    return Head(n.day, n.kind, n.manifest.position_to, n.url)


class TestOrder:
    def test_without_a_head_every_night_from_the_first_full_in_order(self) -> None:
        """A first load (and a rebuild) replays the backup from its earliest full."""
        older = night(1, "full", None, "p0")
        result = pending("orders", [*CHAIN], None)
        assert result.nights == [FULL, D2, D3, D4]
        assert result.gap is None
        assert pending("orders", [older], None).nights == [older]

    def test_after_the_head_only_what_continues_it(self) -> None:
        """A rerun of an applied night plans nothing: the ledger's head is past it."""
        assert pending("orders", CHAIN, head_of(D2)).nights == [D3, D4]
        assert pending("orders", CHAIN, head_of(D4)).nights == []

    def test_until_stops_at_that_night(self) -> None:
        assert pending("orders", CHAIN, None, until=date(2026, 3, 3)).nights == [FULL, D2, D3]

    def test_a_later_full_replaces_the_chain(self) -> None:
        """A new full holds the whole table: it is applied even if it continues nothing."""
        refull = night(3, "full", None, "q3")
        after = night(4, "delta", "q3", "q4")
        result = pending("orders", [FULL, D2, refull, after], head_of(D2))
        assert result.nights == [refull, after]

    def test_a_re_snapshot_delta_continues_the_chain(self) -> None:
        snap = night(3, "delta", "p2", "p3", snapshot=True)
        assert snap.replaces
        assert pending("orders", [FULL, D2, snap], head_of(D2)).nights == [snap]


class TestMissingNights:
    def test_a_gap_stops_after_the_nights_before_it_naming_the_missing_night(self) -> None:
        """D3's manifest is gone: D2 is applied, D4 (which continues D3) is not."""
        lost = Unfinished(date(2026, 3, 3), "delta", "s3://backup/2026-03-03/delta/_plan.json")
        result = pending("orders", [FULL, D2, D4], head_of(FULL), unfinished=[lost])
        assert result.nights == [D2]
        assert isinstance(result.gap, MissingNightError)
        text = str(result.gap)
        assert "2026-03-03 delta" in text
        assert "_plan.json" in text
        assert "'p2'" in text
        assert "'p3'" in text

    def test_a_gap_with_nothing_in_between_names_the_days(self) -> None:
        result = pending("orders", [FULL, D4], head_of(FULL))
        assert result.nights == []
        assert "between 2026-03-01 and 2026-03-04" in str(result.gap)

    def test_a_night_asked_for_without_a_manifest_applies_nothing(self) -> None:
        lost = Unfinished(date(2026, 3, 5), "delta", "s3://backup/2026-03-05/delta/_plan.json")
        with pytest.raises(NoBackupError, match=r"no complete backup of 2026-03-05.*_plan\.json"):
            pending("orders", CHAIN, head_of(D2), until=date(2026, 3, 5), unfinished=[lost])

    def test_no_full_to_start_from(self) -> None:
        with pytest.raises(NoBackupError, match="no complete full backup"):
            pending("orders", [D2, D3], None)
