"""Event-time tumbling windows of one partition: assignment, aggregates, grace, late events,
idle closing, and the deltas handed to the warehouse."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indutech_iot_aggregator.windows import (
    US_PER_S,
    Committed,
    PartitionWindows,
    ReadingAggregate,
    TicketAggregate,
    Verdict,
    WindowSpec,
    from_us,
    to_us,
)

T0 = to_us(datetime(2026, 3, 1, 10, 0, tzinfo=UTC))  # a window boundary for 60 s windows
S = US_PER_S


def windows(
    *, size_s: int = 60, grace_s: float = 10, policy: str = "correction", **kwargs: object
) -> PartitionWindows:
    spec = WindowSpec.of(size_s=size_s, grace_s=grace_s)
    return PartitionWindows("tickets", 0, spec, policy, **kwargs)  # type: ignore[arg-type]


def ticket(
    w: PartitionWindows,
    offset: int,
    at_us: int,
    *,
    customer: str = "c1",
    region: str = "emea",
    revenue: str = "1.00",
    latency: int = 10,
) -> Verdict:
    return w.add_ticket(
        offset,
        event_us=at_us,
        customer_id=customer,
        region=region,
        revenue=Decimal(revenue),
        latency_ms=latency,
    )


class TestWindowSpec:
    def test_size_must_be_10_s_to_1_h(self) -> None:
        """Window sizes outside 10 s..1 h are refused."""
        with pytest.raises(ValueError, match="10 s to 3600 s"):
            WindowSpec.of(size_s=5, grace_s=0)
        with pytest.raises(ValueError, match="10 s to 3600 s"):
            WindowSpec.of(size_s=3601, grace_s=0)
        assert WindowSpec.of(size_s=10, grace_s=0).size_us == 10 * S

    def test_windows_are_aligned_on_the_epoch(self) -> None:
        """An event belongs to [floor(t / size) * size, + size), before 1970 too."""
        spec = WindowSpec.of(size_s=60, grace_s=0)
        assert spec.start_of(T0) == T0
        assert spec.start_of(T0 + 59 * S + 999_999) == T0
        assert spec.start_of(T0 + 60 * S) == T0 + 60 * S
        assert spec.start_of(-1) == -60 * S

    def test_microseconds_round_trip_exactly(self) -> None:
        """Event times convert to µs and back without a float on the way."""
        moment = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
        assert from_us(to_us(moment)) == moment


class TestAggregates:
    def test_tickets_by_customer_and_region(self) -> None:
        """Count, exact revenue sum and latency sum/count/min/max per (window, customer, region)."""
        w = windows()
        ticket(w, 0, T0 + 1 * S, revenue="0.10", latency=30)
        ticket(w, 1, T0 + 2 * S, revenue="0.10", latency=10)
        ticket(w, 2, T0 + 3 * S, revenue="0.10", latency=20)
        ticket(w, 3, T0 + 4 * S, customer="c2", revenue="5.55", latency=7)
        ticket(w, 4, T0 + 61 * S, revenue="1.00", latency=1)
        assert w.tickets[(T0, "c1", "emea")] == TicketAggregate(
            count=3,
            revenue=Decimal("0.30"),
            latency_sum=60,
            latency_count=3,
            latency_min=10,
            latency_max=30,
        )
        assert w.tickets[(T0, "c2", "emea")].revenue == Decimal("5.55")
        assert w.tickets[(T0 + 60 * S, "c1", "emea")].count == 1
        assert len(w.tickets) == 3

    def test_readings_by_sensor_site_and_metric(self) -> None:
        """Count, sum, min and max per (window, sensor, site, metric)."""
        w = windows()
        for offset, (metric, value) in enumerate(
            [("temperature", 20.5), ("temperature", 19.5), ("pressure", 1.25)]
        ):
            w.add_reading(
                offset, event_us=T0 + S, sensor_id="s1", site="lyon", metric=metric, value=value
            )
        assert w.readings[(T0, "s1", "lyon", "temperature")] == ReadingAggregate(
            count=2, total=40.0, minimum=19.5, maximum=20.5
        )
        assert w.readings[(T0, "s1", "lyon", "pressure")].count == 1

    def test_merge_adds_and_keeps_the_extremes(self) -> None:
        """What the warehouse does with two deltas of one row."""
        a = TicketAggregate()
        a.add(revenue=Decimal("1.10"), latency_ms=5, late=False)
        b = TicketAggregate()
        b.add(revenue=Decimal("2.20"), latency_ms=50, late=True)
        a.merge(b)
        assert a == TicketAggregate(2, Decimal("3.30"), 55, 2, 5, 50, 1)


class TestGraceAndLateness:
    def test_window_closes_once_the_watermark_passes_end_plus_grace(self) -> None:
        """[T0, T0+60) stays open until an event at T0+70 s (grace 10 s) arrives."""
        w = windows(grace_s=10)
        ticket(w, 0, T0 + 5 * S)
        ticket(w, 1, T0 + 69 * S)
        assert w.closed_before_us == T0  # nothing closed yet
        assert ticket(w, 2, T0 + 30 * S) is Verdict.ON_TIME  # out of order, within grace
        ticket(w, 3, T0 + 70 * S)
        assert w.closed_before_us == T0 + 60 * S
        assert w.final_due

    def test_late_event_is_a_correction_by_default(self) -> None:
        """Beyond grace, policy correction: added to its closed window, counted as late."""
        w = windows(grace_s=10)
        ticket(w, 0, T0 + 5 * S)
        ticket(w, 1, T0 + 75 * S)
        assert ticket(w, 2, T0 + 59 * S, revenue="2.50") is Verdict.CORRECTION
        row = w.tickets[(T0, "c1", "emea")]
        assert (row.count, row.revenue, row.late_events) == (2, Decimal("3.50"), 1)

    def test_late_event_is_refused_under_dead_letter_policy(self) -> None:
        """Beyond grace, policy dead_letter: not aggregated; its offset still moves on."""
        w = windows(grace_s=10, policy="dead_letter")
        ticket(w, 0, T0 + 5 * S)
        ticket(w, 1, T0 + 75 * S)
        assert ticket(w, 2, T0 + 59 * S) is Verdict.LATE_REFUSED
        assert w.tickets[(T0, "c1", "emea")].count == 1
        assert w.next_offset == 3

    def test_an_idle_key_closes_with_its_partition(self) -> None:
        """Key c1 sends nothing more; c2 moving the partition's time on closes c1's window."""
        w = windows(grace_s=0)
        ticket(w, 0, T0 + 5 * S, customer="c1")
        ticket(w, 1, T0 + 60 * S, customer="c2")
        assert w.closed_before_us == T0 + 60 * S

    def test_an_idle_partition_closes_its_windows_by_wall_clock(self) -> None:
        """close_idle closes the window holding the watermark; a later event in it is late."""
        w = windows(grace_s=10)
        ticket(w, 0, T0 + 5 * S)
        assert not w.final_due
        assert w.close_idle()
        assert w.closed_before_us == T0 + 60 * S
        assert w.final_due
        assert not w.close_idle()  # nothing more to close
        assert ticket(w, 1, T0 + 6 * S) is Verdict.CORRECTION

    def test_a_partition_without_events_has_nothing_to_close(self) -> None:
        assert not windows().close_idle()


class TestOffsetsAndDeltas:
    def test_a_refetched_offset_is_ignored(self) -> None:
        """Offsets below the next one are duplicates of a re-fetch and change nothing."""
        w = windows()
        ticket(w, 5, T0 + S)
        assert ticket(w, 5, T0 + S) is Verdict.DUPLICATE
        assert not w.skip(3)
        assert w.tickets[(T0, "c1", "emea")].count == 1

    def test_batch_continues_from_the_committed_offset_and_written_restarts_deltas(self) -> None:
        """A batch names the offset the warehouse holds; once written, deltas start afresh."""
        w = windows(committed=Committed(next_offset=100))
        assert w.batch() is None  # nothing read yet
        ticket(w, 100, T0 + S)
        assert w.skip(101)  # a bad record
        batch = w.batch()
        assert batch is not None
        assert (batch.expected_offset, batch.next_offset, batch.records) == (100, 102, 2)
        assert batch.rows == 1
        w.written(batch)
        assert w.committed == Committed(102, T0 + S, T0 + S - 10 * S - (T0 + S - 10 * S) % (60 * S))
        assert (w.tickets, w.records, w.batch()) == ({}, 0, None)
        ticket(w, 102, T0 + 2 * S)
        second = w.batch()
        assert second is not None
        assert second.expected_offset == 102
        assert second.tickets[(T0, "c1", "emea")].count == 1  # a delta, not the running total

    def test_a_restart_resumes_watermark_and_closed_windows(self) -> None:
        """From the warehouse's position, lateness is judged as before the restart."""
        w = windows(
            committed=Committed(
                next_offset=7, watermark_us=T0 + 90 * S, closed_before_us=T0 + 60 * S
            )
        )
        assert ticket(w, 7, T0 + 59 * S) is Verdict.CORRECTION
        assert ticket(w, 8, T0 + 61 * S) is Verdict.ON_TIME
        assert not w.final_due  # nothing closed since the restart

    def test_final_batch_carries_the_previous_close(self) -> None:
        """A final batch names the range of windows it closes: [previous close, new close)."""
        w = windows(grace_s=0, committed=Committed(next_offset=0, closed_before_us=T0))
        ticket(w, 0, T0 + 120 * S)
        batch = w.batch()
        assert batch is not None
        assert batch.final_due
        assert (batch.previous_closed_before_us, batch.closed_before_us) == (T0, T0 + 120 * S)


EVENTS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=600 * S),  # event time offset
        st.sampled_from(["c1", "c2", "c3"]),
        st.integers(min_value=0, max_value=99_999).map(lambda cents: Decimal(cents) / 100),
        st.integers(min_value=0, max_value=10_000),
    ),
    max_size=60,
)


class TestCrashInvariance:
    @settings(max_examples=200, deadline=None)
    @given(events=EVENTS, cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=6))
    def test_merged_deltas_equal_one_pass_whatever_the_batch_boundaries(
        self, events: list[tuple[int, str, Decimal, int]], cuts: list[int]
    ) -> None:
        """Written in batches cut anywhere (as crashes and emission intervals cut them), the
        deltas merged row by row equal aggregating the whole stream at once, late events and
        all: so a replay from the warehouse offsets can neither double nor lose anything."""
        one_pass = windows(grace_s=5)
        for offset, (at, customer, revenue, latency) in enumerate(events):
            ticket(
                one_pass, offset, T0 + at, customer=customer, revenue=str(revenue), latency=latency
            )

        batched = windows(grace_s=5)
        warehouse: dict[tuple[int, str, str], TicketAggregate] = {}
        boundaries = set(cuts)
        for offset, (at, customer, revenue, latency) in enumerate(events):
            if offset in boundaries and (batch := batched.batch()) is not None:
                for key, delta in batch.tickets.items():
                    warehouse.setdefault(key, TicketAggregate()).merge(delta)
                batched.written(batch)
                if offset % 2:  # a restart from the committed position, or carrying on
                    batched = windows(grace_s=5, committed=batched.committed)
            ticket(
                batched, offset, T0 + at, customer=customer, revenue=str(revenue), latency=latency
            )
        if (batch := batched.batch()) is not None:
            for key, delta in batch.tickets.items():
                warehouse.setdefault(key, TicketAggregate()).merge(delta)
        assert warehouse == one_pass.tickets
