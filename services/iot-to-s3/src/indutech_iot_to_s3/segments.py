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
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from indutech_common.schemas.lake import object_key
from indutech_iot_to_s3.batches import EVENT_TIME_COLUMN, OFFSET_COLUMN, row_bytes
from indutech_iot_to_s3.config import RotationSettings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _as_datetime(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def split_by_hour(batch: pa.RecordBatch) -> list[tuple[datetime, pa.RecordBatch]]:
    """The rows of ``batch`` grouped by the UTC hour of their event time, hours ascending,
    each group in the batch's (offset) order. One hour (the usual case) costs no copy."""
    hours = pc.floor_temporal(batch.column(EVENT_TIME_COLUMN), unit="hour").cast(pa.int64())
    bounds = pc.min_max(hours)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low == high:
        return [(_as_datetime(low), batch)]
    order = pc.sort_indices(hours)  # stable: equal hours keep their order
    grouped = batch.take(order)
    counts = pc.value_counts(hours.take(order))  # in order of appearance: ascending hours
    pieces: list[tuple[datetime, pa.RecordBatch]] = []
    start = 0
    for hour, count in zip(
        counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
    ):
        pieces.append((_as_datetime(hour), grouped.slice(start, count)))
        start += count
    return pieces


@dataclass
class HourBuffer:
    """The valid records of one event-time hour within a segment, in offset order."""

    hour: datetime
    batches: list[pa.RecordBatch] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1
    records: int = 0
    max_event_us: int | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        offsets = batch.column(OFFSET_COLUMN)
        if not self.batches:
            self.first_offset = offsets[0].as_py()
        self.last_offset = offsets[-1].as_py()
        self.batches.append(batch)
        self.records += batch.num_rows
        newest = pc.max(batch.column(EVENT_TIME_COLUMN).cast(pa.int64())).as_py()
        if self.max_event_us is None or newest > self.max_event_us:
            self.max_event_us = newest

    @property
    def max_event_time(self) -> datetime | None:
        return None if self.max_event_us is None else _as_datetime(self.max_event_us)


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

    @property
    def empty(self) -> bool:
        return self.start is None

    def add(
        self,
        first_offset: int,
        last_offset: int,
        valid: pa.RecordBatch | None,
        invalid: int = 0,
        size_bytes: int | None = None,
    ) -> None:
        """Add the records ``[first_offset, last_offset]`` read from the partition: ``valid``
        holds the valid ones (offset order); ``invalid`` of them went to the dead letters.
        ``size_bytes`` is their Arrow size (``row_bytes``), computed when not given."""
        now = time.monotonic()
        if self.start is None:
            self.start = first_offset
            self.opened_at = now
        self.end = last_offset
        self.last_append_at = now
        valid_count = 0 if valid is None else valid.num_rows
        self.invalid += invalid
        if valid is None or valid_count == 0:
            return
        for hour, rows in split_by_hour(valid):
            buffer = self.hours.get(hour)
            if buffer is None:
                buffer = self.hours[hour] = HourBuffer(hour)
            buffer.add(rows)
        if size_bytes is None:
            size_bytes = pc.sum(row_bytes(valid)).as_py()
        self.records += valid_count
        self.size_bytes += size_bytes

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
                key=object_key(prefix, self.topic, b.hour, self.partition, b.first_offset),
                hour=b.hour,
                first_offset=b.first_offset,
                last_offset=b.last_offset,
                records=b.records,
            )
            for b in self.hours.values()
        ]
        return sorted(planned, key=lambda p: p.first_offset)

    def max_event_time(self) -> datetime | None:
        times = [b.max_event_time for b in self.hours.values() if b.max_event_time is not None]
        return max(times) if times else None


class Poll:
    """One poll of a partition, validated, fed to its segments piece by piece.

    A piece never crosses a replay's end offset, never takes a segment past
    ``max_records`` valid records nor past ``max_bytes`` Arrow bytes (a single record
    larger than that goes alone), so where segments end does not depend on how the
    records were polled.
    """

    def __init__(self, offsets: Sequence[int], valid: pa.RecordBatch | None) -> None:
        self.offsets = offsets  # every record read, ascending
        self.valid = valid
        if valid is None or valid.num_rows == 0:
            self.valid_offsets: list[int] = []
            self.cumulative: list[int] = []
        else:
            self.valid_offsets = valid.column(OFFSET_COLUMN).to_pylist()
            self.cumulative = pc.cumulative_sum(row_bytes(valid)).to_pylist()
        self.next_record = 0
        self.next_row = 0

    def done(self) -> bool:
        return self.next_record >= len(self.offsets)

    def _bytes_before(self, row: int) -> int:
        return self.cumulative[row - 1] if row else 0

    def feed(self, segment: Segment, *, max_records: int, max_bytes: int) -> str | None:
        """Add the next piece to ``segment``; why it must be sealed now, or None."""
        offsets, rows = self.offsets, len(self.valid_offsets)
        first = self.next_record
        if segment.replay_end is not None:
            if offsets[first] > segment.replay_end:
                return "replay_complete"  # its end offset is gone (compaction, aborted records)
            end = bisect_right(offsets, segment.replay_end, lo=first)
            end_row = bisect_right(self.valid_offsets, offsets[end - 1], lo=self.next_row)
        else:
            room = max(0, max_records - segment.records)
            budget = self._bytes_before(self.next_row) + max_bytes - segment.size_bytes
            end_row = min(
                self.next_row + room, bisect_right(self.cumulative, budget, lo=self.next_row)
            )
            if end_row == self.next_row < rows:
                if segment.records:
                    return "max_records" if room == 0 else "max_bytes"
                end_row += 1  # a record larger than max_bytes goes alone
            end = len(offsets)
            if end_row < rows:  # the segment is full: the next valid record starts the next one
                end = bisect_left(offsets, self.valid_offsets[end_row], lo=first)
        piece = None
        if end_row > self.next_row and self.valid is not None:
            piece = self.valid.slice(self.next_row, end_row - self.next_row)
        segment.add(
            offsets[first],
            offsets[end - 1],
            piece,
            invalid=(end - first) - (end_row - self.next_row),
            size_bytes=self._bytes_before(end_row) - self._bytes_before(self.next_row),
        )
        self.next_record, self.next_row = end, end_row
        if segment.replay_end is not None:
            return "replay_complete" if segment.replay_complete() else None
        if segment.records >= max_records:
            return "max_records"
        if segment.size_bytes >= max_bytes or end_row < rows:
            return "max_bytes"
        return None
