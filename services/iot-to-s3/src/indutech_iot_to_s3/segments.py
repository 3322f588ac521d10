"""Segments: the unit of buffering, planning, upload and commit of one partition.

A segment holds a contiguous range of one partition's offsets, ``[start, end]``
(every record read, valid or not), with the valid records grouped by their
event-time hour. Sealing a segment plans one lake object per hour, named by
the first offset of that hour's records in the segment. The plan is a pure
function of the records, so reading the same offsets again always gives the
same keys with the same content: that is what makes a replay safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from indutech_iot_to_s3.config import RotationSettings

# Per-record bookkeeping on top of the value bytes (list slots, the bytes and int objects).
RECORD_OVERHEAD_BYTES = 96


def lake_key(prefix: str, topic: str, hour: datetime, partition: int, first_offset: int) -> str:
    """The object key of DESIGN.md's lake layout."""
    hour = hour.astimezone(UTC)
    return (
        f"{prefix}iot/{topic}/year={hour.year:04d}/month={hour.month:02d}/day={hour.day:02d}/"
        f"hour={hour.hour:02d}/{topic}+{partition}+{first_offset:020d}.parquet"
    )


def hour_of(event_time: datetime) -> datetime:
    if event_time.tzinfo is not UTC:  # validated records are UTC already
        event_time = event_time.astimezone(UTC)
    return event_time.replace(minute=0, second=0, microsecond=0)


@dataclass
class HourBuffer:
    """The valid records of one event-time hour within a segment, in offset order."""

    hour: datetime
    end: datetime = field(init=False)
    values: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    max_event_time: datetime | None = None

    def __post_init__(self) -> None:
        self.end = self.hour + timedelta(hours=1)


@dataclass(frozen=True)
class PlannedObject:
    key: str
    hour: datetime
    first_offset: int
    last_offset: int
    records: int


@dataclass
class Segment:
    """The open (or sealed) buffer of one partition."""

    topic: str
    partition: int
    replay_end: int | None = None
    start: int | None = None
    end: int | None = None
    records: int = 0
    invalid: int = 0
    size_bytes: int = 0
    hours: dict[datetime, HourBuffer] = field(default_factory=dict)
    opened_at: float = 0.0
    last_append_at: float = 0.0
    _last: HourBuffer | None = field(default=None, repr=False)

    @property
    def empty(self) -> bool:
        return self.start is None

    def add(self, offset: int, value: bytes | None, event_time: datetime | None) -> None:
        """Add one record; ``value`` is None for a record that went to the dead letters."""
        now = time.monotonic()
        if self.start is None:
            self.start = offset
            self.opened_at = now
        self.end = offset
        self.last_append_at = now
        if value is None or event_time is None:
            self.invalid += 1
            return
        buffer = self._last  # records mostly come in event-time order: same hour as the last
        if buffer is None or not buffer.hour <= event_time < buffer.end:
            hour = hour_of(event_time)
            buffer = self.hours.get(hour)
            if buffer is None:
                buffer = self.hours[hour] = HourBuffer(hour)
            self._last = buffer
        buffer.values.append(value)
        buffer.offsets.append(offset)
        if buffer.max_event_time is None or event_time > buffer.max_event_time:
            buffer.max_event_time = event_time
        self.records += 1
        self.size_bytes += len(value) + RECORD_OVERHEAD_BYTES

    def replay_complete(self) -> bool:
        return self.replay_end is not None and self.end is not None and self.end >= self.replay_end

    def rotation_due(self, rotation: RotationSettings, now: float) -> str | None:
        """Why this segment should be sealed now, or None. A replay ends only at its end offset."""
        if self.empty:
            return None
        if self.replay_end is not None:
            return "replay_complete" if self.replay_complete() else None
        checks = (
            ("max_records", self.records >= rotation.max_records),
            ("max_bytes", self.size_bytes >= rotation.max_bytes),
            ("max_age", now - self.opened_at >= rotation.max_age_s),
            ("idle", now - self.last_append_at >= rotation.idle_s),
        )
        return next((reason for reason, due in checks if due), None)

    def plan(self, prefix: str) -> list[PlannedObject]:
        """One object per event-time hour, named by the hour's first offset in this segment."""
        planned = [
            PlannedObject(
                key=lake_key(prefix, self.topic, b.hour, self.partition, b.offsets[0]),
                hour=b.hour,
                first_offset=b.offsets[0],
                last_offset=b.offsets[-1],
                records=len(b.offsets),
            )
            for b in self.hours.values()
        ]
        return sorted(planned, key=lambda p: p.first_offset)

    def max_event_time(self) -> datetime | None:
        times = [b.max_event_time for b in self.hours.values() if b.max_event_time is not None]
        return max(times) if times else None
