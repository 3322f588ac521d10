"""Event-time tumbling windows of one source partition, kept as mergeable partial aggregates.

Why per source partition: each consumer aggregates only the partitions it owns
and writes *partial* aggregates keyed by (window, group, topic, partition); the
warehouse views add the partitions up. No repartition topic is needed to group
by a key other than the topic's, and a partition's state moves with its offsets
on a rebalance (both live in the warehouse, written in one transaction).

What is held in memory is only the *delta* since the last warehouse write: the
sink adds it to the stored row (counts and sums add, minimums and maximums take
the smaller and larger), so a crash loses nothing that was not also rolled back
with its offsets, and memory stays bounded by the emission interval.

Time is event time, per partition: the partition's *watermark* is the newest
event time seen in it. Window ``[s, s + size)`` is *closed* once the watermark
reaches ``s + size + grace``; ``closed_before`` is the first window start not
closed. The watermark is per partition, not per key, so the windows of an idle
key close as soon as any other key of the partition moves time on; a partition
that receives nothing at all for ``idle_close_s`` closes every window it holds
by wall clock (``close_idle``). An event whose window is already closed is
*late*: it is either added as a correction (the row is updated again, its
``late_events`` counted) or refused for the dead-letter topic, by setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Literal, TypeVar

US_PER_S = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_WINDOW_S = 10
MAX_WINDOW_S = 3600

LatePolicy = Literal["correction", "dead_letter"]
# (window start µs, customer_id, region) and (window start µs, sensor_id, site, metric)
TicketKey = tuple[int, str, str]
ReadingKey = tuple[int, str, str, str]


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (no float on the way)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Tumbling windows of ``size_us`` aligned on the epoch, with ``grace_us`` of lateness."""

    size_us: int
    grace_us: int

    @classmethod
    def of(cls, *, size_s: float, grace_s: float) -> WindowSpec:
        if not MIN_WINDOW_S <= size_s <= MAX_WINDOW_S:
            raise ValueError(f"window size must be {MIN_WINDOW_S} s to {MAX_WINDOW_S} s")
        if grace_s < 0:
            raise ValueError("grace must be >= 0")
        return cls(round(size_s * US_PER_S), round(grace_s * US_PER_S))

    def start_of(self, micros: int) -> int:
        # Python's % is floored, so this is right before 1970 too.
        return micros - micros % self.size_us

    def closed_before(self, watermark_us: int) -> int:
        """First window start still open at this watermark: ``[s, s+size)`` is closed when
        ``s + size + grace <= watermark``, i.e. ``s < start_of(watermark - grace)``."""
        return self.start_of(watermark_us - self.grace_us)


@dataclass(slots=True)
class TicketAggregate:
    """Tickets of one (window, customer, region, partition): every field is mergeable."""

    count: int = 0
    revenue: Decimal = Decimal("0.00")
    latency_sum: int = 0
    latency_count: int = 0
    latency_min: int | None = None
    latency_max: int | None = None
    late_events: int = 0

    def add(self, *, revenue: Decimal, latency_ms: int, late: bool) -> None:
        self.count += 1
        self.revenue += revenue
        self.latency_sum += latency_ms
        self.latency_count += 1
        self.latency_min = (
            latency_ms if self.latency_min is None else min(self.latency_min, latency_ms)
        )
        self.latency_max = (
            latency_ms if self.latency_max is None else max(self.latency_max, latency_ms)
        )
        self.late_events += late

    def merge(self, other: TicketAggregate) -> None:
        """What the warehouse does with a delta: add, and keep the extremes."""
        self.count += other.count
        self.revenue += other.revenue
        self.latency_sum += other.latency_sum
        self.latency_count += other.latency_count
        self.latency_min = _least(self.latency_min, other.latency_min)
        self.latency_max = _greatest(self.latency_max, other.latency_max)
        self.late_events += other.late_events


@dataclass(slots=True)
class ReadingAggregate:
    """Readings of one (window, sensor, site, metric, partition)."""

    count: int = 0
    total: float = 0.0
    minimum: float | None = None
    maximum: float | None = None
    late_events: int = 0

    def add(self, *, value: float, late: bool) -> None:
        self.count += 1
        self.total += value
        self.minimum = value if self.minimum is None else min(self.minimum, value)
        self.maximum = value if self.maximum is None else max(self.maximum, value)
        self.late_events += late

    def merge(self, other: ReadingAggregate) -> None:
        self.count += other.count
        self.total += other.total
        self.minimum = _least(self.minimum, other.minimum)
        self.maximum = _greatest(self.maximum, other.maximum)
        self.late_events += other.late_events


NumberT = TypeVar("NumberT", int, float)


def _least(a: NumberT | None, b: NumberT | None) -> NumberT | None:
    return b if a is None else a if b is None else min(a, b)


def _greatest(a: NumberT | None, b: NumberT | None) -> NumberT | None:
    return b if a is None else a if b is None else max(a, b)


class Verdict(Enum):
    """What became of an event given to a partition's windows."""

    ON_TIME = "on_time"
    CORRECTION = "correction"  # late, added to its closed window as a correction
    LATE_REFUSED = "late_refused"  # late, not added: the caller dead-letters it
    DUPLICATE = "duplicate"  # an offset already taken (a re-fetch): ignored


@dataclass(frozen=True, slots=True)
class Committed:
    """A partition's position as the warehouse holds it (the offsets table)."""

    next_offset: int | None = None  # None: nothing written yet, start at the beginning
    watermark_us: int | None = None
    closed_before_us: int | None = None


@dataclass(slots=True)
class PartitionBatch:
    """One partition's share of a warehouse transaction.

    ``expected_offset`` is the next offset the warehouse holds for the partition
    when this batch was built; the sink writes the batch only if it still holds
    it (compare-and-set), so a zombie owner or a retry after an ambiguous commit
    can never add a delta twice.
    """

    topic: str
    partition: int
    expected_offset: int | None
    next_offset: int
    watermark_us: int | None
    closed_before_us: int | None
    tickets: dict[TicketKey, TicketAggregate]
    readings: dict[ReadingKey, ReadingAggregate]
    records: int
    newest_event_us: int | None
    final_due: bool = False  # windows closed since the last write: mark their rows final
    previous_closed_before_us: int | None = None

    @property
    def rows(self) -> int:
        return len(self.tickets) + len(self.readings)


@dataclass
class PartitionWindows:
    """The open windows of one topic-partition since its last warehouse write."""

    topic: str
    partition: int
    spec: WindowSpec
    late_policy: LatePolicy
    committed: Committed = field(default_factory=Committed)
    last_activity: float = 0.0  # wall-clock (monotonic) time of the last record, for idleness

    def __post_init__(self) -> None:
        self.next_offset: int | None = self.committed.next_offset
        self.watermark_us: int | None = self.committed.watermark_us
        self.closed_before_us: int | None = self.committed.closed_before_us
        self.tickets: dict[TicketKey, TicketAggregate] = {}
        self.readings: dict[ReadingKey, ReadingAggregate] = {}
        self.records = 0
        self.newest_event_us: int | None = None
        # the lowest window start taken: a first close below it closes no window with data
        self._lowest_start_us: int | None = None

    # -- taking records ------------------------------------------------------------------

    def _admit(self, offset: int, event_us: int) -> tuple[int, Verdict]:
        """Advance offset and watermark; the event's window start and whether it is late."""
        if self.next_offset is not None and offset < self.next_offset:
            return 0, Verdict.DUPLICATE
        self.next_offset = offset + 1
        self.records += 1
        start = self.spec.start_of(event_us)
        if self._lowest_start_us is None or start < self._lowest_start_us:
            self._lowest_start_us = start
        late = self.closed_before_us is not None and start < self.closed_before_us
        if self.watermark_us is None or event_us > self.watermark_us:
            self.watermark_us = event_us
            closed = self.spec.closed_before(event_us)
            if self.closed_before_us is None or closed > self.closed_before_us:
                self.closed_before_us = closed
        if self.newest_event_us is None or event_us > self.newest_event_us:
            self.newest_event_us = event_us
        if not late:
            return start, Verdict.ON_TIME
        return (
            start,
            Verdict.CORRECTION if self.late_policy == "correction" else Verdict.LATE_REFUSED,
        )

    def add_ticket(
        self,
        offset: int,
        *,
        event_us: int,
        customer_id: str,
        region: str,
        revenue: Decimal,
        latency_ms: int,
    ) -> Verdict:
        start, verdict = self._admit(offset, event_us)
        if verdict in (Verdict.ON_TIME, Verdict.CORRECTION):
            key = (start, customer_id, region)
            aggregate = self.tickets.get(key)
            if aggregate is None:
                aggregate = self.tickets[key] = TicketAggregate()
            aggregate.add(
                revenue=revenue, latency_ms=latency_ms, late=verdict is Verdict.CORRECTION
            )
        return verdict

    def add_reading(
        self, offset: int, *, event_us: int, sensor_id: str, site: str, metric: str, value: float
    ) -> Verdict:
        start, verdict = self._admit(offset, event_us)
        if verdict in (Verdict.ON_TIME, Verdict.CORRECTION):
            key = (start, sensor_id, site, metric)
            aggregate = self.readings.get(key)
            if aggregate is None:
                aggregate = self.readings[key] = ReadingAggregate()
            aggregate.add(value=value, late=verdict is Verdict.CORRECTION)
        return verdict

    def skip(self, offset: int) -> bool:
        """A record with nothing to aggregate (refused as bad): only the offset moves on.

        Returns False for an offset already taken (a re-fetch)."""
        if self.next_offset is not None and offset < self.next_offset:
            return False
        self.next_offset = offset + 1
        self.records += 1
        return True

    def close_idle(self) -> bool:
        """Close every window holding an event up to the watermark (the partition is idle).

        Returns True when that closed a window (a final write is then due)."""
        if self.watermark_us is None:
            return False
        target = self.spec.start_of(self.watermark_us) + self.spec.size_us
        if self.closed_before_us is not None and self.closed_before_us >= target:
            return False
        self.closed_before_us = target
        return True

    # -- handing over to the sink ----------------------------------------------------------

    @property
    def open_keys(self) -> int:
        return len(self.tickets) + len(self.readings)

    @property
    def final_due(self) -> bool:
        """Windows closed since the last write: their final write is due."""
        if self.closed_before_us == self.committed.closed_before_us:
            return False
        if self.committed.closed_before_us is not None:
            return True
        # The first close ever: due only once it passes a window holding data.
        lowest = self._lowest_start_us
        return (
            lowest is not None
            and self.closed_before_us is not None
            and self.closed_before_us > lowest
        )

    @property
    def dirty(self) -> bool:
        return self.next_offset != self.committed.next_offset or self.final_due

    def batch(self) -> PartitionBatch | None:
        """What the next warehouse transaction writes for this partition; None when nothing.

        The deltas are handed over as they are: the main loop takes no record until
        the write is done, then calls ``written`` (or, after a failure, keeps adding
        to the same deltas, and the next batch covers everything since the commit).
        """
        if not self.dirty or self.next_offset is None:
            return None
        return PartitionBatch(
            topic=self.topic,
            partition=self.partition,
            expected_offset=self.committed.next_offset,
            next_offset=self.next_offset,
            watermark_us=self.watermark_us,
            closed_before_us=self.closed_before_us,
            tickets=self.tickets,
            readings=self.readings,
            records=self.records,
            newest_event_us=self.newest_event_us,
            final_due=self.final_due,
            previous_closed_before_us=self.committed.closed_before_us,
        )

    def written(self, batch: PartitionBatch) -> None:
        """The batch is committed in the warehouse: it is the new base, the deltas restart."""
        self.committed = Committed(batch.next_offset, batch.watermark_us, batch.closed_before_us)
        self.tickets = {}
        self.readings = {}
        self.records = 0
        self.newest_event_us = None
