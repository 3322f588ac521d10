"""The disk buffer keeps what CloudWatch has not taken across restarts, bounded, oldest first."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from indutech_metrics_shipper.convert import Datum, StatisticSet
from indutech_metrics_shipper.sinks import DiskDatumBuffer

MB = 1024 * 1024


def datums(start: int, count: int) -> list[Datum]:
    return [
        Datum("m", (("worker", "w"),), 1_700_000_000.5 + i, value=float(i))
        for i in range(start, start + count)
    ]


def reopen(buffer: DiskDatumBuffer) -> DiskDatumBuffer:
    """The same folder and bounds, as a restarted shipper opens it."""
    return DiskDatumBuffer(
        buffer.directory, max_bytes=buffer.max_bytes, max_datums=buffer.max_datums
    )


class TestDiskDatumBuffer:
    def test_every_kind_of_datum_survives_a_restart_unchanged(self, tmp_path: Path) -> None:
        kinds = [
            Datum("plain", (), 1.25, unit="Seconds", value=0.5),
            Datum("wide", (("a", "1"), ("b", "é")), 2.0, unit="Count", value=3.0),
            Datum("histogram", (("w", "x"),), 3.0, values=(0.1, 1.0), counts=(4.0, 2.0)),
            Datum("stats", (), 4.0, statistics=StatisticSet(6.0, 3.3, 0.1, 1.0)),
        ]
        buffer = DiskDatumBuffer(tmp_path, max_bytes=MB, max_datums=1000)
        buffer.extend(kinds)
        assert reopen(buffer).snapshot() == kinds

    def test_delivered_datums_do_not_come_back(self, tmp_path: Path) -> None:
        buffer = DiskDatumBuffer(tmp_path, max_bytes=MB, max_datums=1000)
        buffer.extend(datums(0, 5))
        buffer.extend(datums(5, 5))
        buffer.remove_first(7)  # one segment whole, the next in part
        again = reopen(buffer)
        assert [d.value for d in again.snapshot()] == [7, 8, 9]
        assert len(again) == 3
        assert again.size == buffer.size == sum(p.stat().st_size for p in tmp_path.glob("*.seg"))

    def test_full_by_count_drops_the_oldest_segments_and_counts_them(self, tmp_path: Path) -> None:
        buffer = DiskDatumBuffer(tmp_path, max_bytes=MB, max_datums=10)
        for start in (0, 4, 8):
            buffer.extend(datums(start, 4))
        assert buffer.dropped == 4
        assert [d.value for d in reopen(buffer).snapshot()] == list(range(4, 12))

    def test_full_by_bytes_drops_the_oldest_segments(self, tmp_path: Path) -> None:
        buffer = DiskDatumBuffer(tmp_path, max_bytes=10_000, max_datums=100_000)
        for start in range(0, 1000, 100):
            buffer.extend(datums(start, 100))
        assert buffer.size <= 10_000
        assert buffer.dropped > 0
        kept = [d.value for d in buffer.snapshot()]
        assert kept == list(range(1000 - len(kept), 1000))  # the newest, in order

    def test_a_cycle_larger_than_the_buffer_keeps_its_newest_datums(self, tmp_path: Path) -> None:
        buffer = DiskDatumBuffer(tmp_path, max_bytes=MB, max_datums=3)
        assert buffer.extend(datums(0, 5)) == 2
        assert [d.value for d in buffer.snapshot()] == [2, 3, 4]

    def test_segments_above_the_saved_state_are_discarded_and_numbering_goes_on(
        self, tmp_path: Path
    ) -> None:
        buffer = DiskDatumBuffer(tmp_path, max_bytes=MB, max_datums=1000)
        buffer.extend(datums(0, 2))
        committed = buffer.last_seq
        buffer.extend(datums(2, 2))  # a kill before the state file named it
        again = reopen(buffer)
        with capture_logs() as logs:
            assert again.discard_after(committed) == 2
        assert [d.value for d in again.snapshot()] == [0, 1]
        assert [e["event"] for e in logs] == ["metric_buffer_uncommitted_discarded"]
        again.remove_first(2)
        empty = reopen(again)
        empty.discard_after(57)  # every segment delivered; the state file names the 57th
        empty.extend(datums(9, 1))
        assert empty.last_seq == 58

    def test_a_cut_write_is_ignored_and_an_unreadable_segment_set_aside(
        self, tmp_path: Path
    ) -> None:
        buffer = DiskDatumBuffer(tmp_path, max_bytes=MB, max_datums=1000)
        buffer.extend(datums(0, 2))
        (tmp_path / "0000000000000002.seg.tmp").write_bytes(b'{"seq": 2}\n{"n"')
        (tmp_path / "0000000000000003.seg").write_bytes(b"not json\n")
        with capture_logs() as logs:
            again = reopen(buffer)
        assert [d.value for d in again.snapshot()] == [0, 1]
        assert not list(tmp_path.glob("*.tmp"))
        assert (tmp_path / "0000000000000003.seg.corrupt").exists()
        unreadable = [e for e in logs if e["event"] == "metric_buffer_segment_unreadable"]
        assert len(unreadable) == 1
        assert unreadable[0]["log_level"] == "error"

    def test_bounds_are_checked(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            DiskDatumBuffer(tmp_path, max_bytes=0, max_datums=10)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("extend"), st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("remove"), st.integers(min_value=0, max_value=60)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=25,
)


class TestDiskDatumBufferProperties:
    @settings(max_examples=60, deadline=None)
    @given(operations, st.integers(min_value=20, max_value=80), st.integers(2_000, 8_000))
    def test_what_is_on_disk_is_what_is_in_memory_within_bounds(
        self, ops: list[tuple[str, int]], max_datums: int, max_bytes: int
    ) -> None:
        """Whatever happens, a restarted buffer holds the same datums in the same order, the
        bounds hold, and every datum is delivered, dropped or still buffered."""
        with tempfile.TemporaryDirectory() as folder:
            buffer = DiskDatumBuffer(Path(folder), max_bytes=max_bytes, max_datums=max_datums)
            added = removed = 0
            for op, n in ops:
                if op == "extend":
                    buffer.extend(datums(added, n))
                    added += n
                elif op == "remove":
                    removed += min(n, len(buffer))
                    buffer.remove_first(n)
                else:
                    dropped = buffer.dropped
                    buffer = reopen(buffer)
                    buffer.dropped += dropped  # a counter of the process, not of the disk
                assert len(buffer) <= max_datums
                assert buffer.size <= max_bytes
                values = [d.timestamp for d in buffer.snapshot()]
                assert values == sorted(values)
                assert len(buffer) + buffer.dropped + removed == added
            restored = reopen(buffer)
            assert restored.snapshot() == buffer.snapshot()
            assert restored.size == buffer.size
