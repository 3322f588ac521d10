"""PutLogEvents batches within its limits, and each line's time."""

from __future__ import annotations

from indutech_metrics_shipper.logs import (
    EVENT_OVERHEAD,
    MAX_BATCH_BYTES,
    MAX_EVENTS,
    MAX_SPAN_MS,
    LogEvent,
    batches,
    event_time_ms,
)

T0 = 1_796_000_000_000


def events(count: int, *, size: int = 10, step_ms: int = 1) -> list[LogEvent]:
    return [LogEvent(T0 + i * step_ms, "x" * size, i) for i in range(count)]


class TestBatches:
    def test_at_most_10000_events(self) -> None:
        split = batches(events(25_000))
        assert [len(b) for b in split] == [MAX_EVENTS, MAX_EVENTS, 5_000]

    def test_bytes_count_26_per_event(self) -> None:
        size = 100_000 - EVENT_OVERHEAD  # exactly 100,000 bytes an event with its overhead
        split = batches(events(25, size=size))
        assert [len(b) for b in split] == [10, 10, 5]
        assert all(sum(e.size for e in b) <= MAX_BATCH_BYTES for b in split)

    def test_a_batch_spans_at_most_24_hours(self) -> None:
        split = batches(events(5, step_ms=10 * 3600 * 1000))  # 0, 10, 20, 30, 40 h
        assert [len(b) for b in split] == [3, 2]
        for batch in split:
            stamps = [e.timestamp_ms for e in batch]
            assert max(stamps) - min(stamps) <= MAX_SPAN_MS

    def test_file_order_is_kept_across_batches(self) -> None:
        split = batches(events(12_345))
        assert [e.end for b in split for e in b] == list(range(12_345))


class TestEventTime:
    def test_the_lines_own_timestamp(self) -> None:
        line = b'{"event": "x", "timestamp": "2026-12-04T20:25:54.206778Z"}'
        assert event_time_ms(line, read_at_ms=1) == 1_796_415_954_206

    def test_a_line_without_one_takes_the_read_time(self) -> None:
        assert event_time_ms(b"plain text", read_at_ms=42) == 42
        assert event_time_ms(b'{"timestamp": "not a time"}', read_at_ms=42) == 42
        assert event_time_ms(b"{broken json", read_at_ms=42) == 42
