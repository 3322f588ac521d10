"""Datums CloudWatch has not accepted yet, kept on disk so that they outlive a restart or a kill.

The buffer is a folder of *segments*, one per cycle that had datums, numbered
so that their order is their names' order. A segment is JSON Lines: a header
(its number), then one datum a line. Every write is write-then-rename
(``.tmp``, fsync, ``os.replace``, fsync of the folder), so a segment on disk is
always whole; a ``.tmp`` left by a kill is removed at start.

**Committed by the state file.** A cycle's datums are increases computed from
the counters' previous values, so datums and values must move together: if the
datums were kept and the values not (a kill between the two writes), the next
start would compute the same increases again and double them. The worker
writes the segment, then its state file naming the segment (``segment``), then
sends. At start, a segment numbered above the state file's is one whose state
was never saved: it is deleted unsent (``discard_after``), and the next scrape
computes the same increases again from the saved values. Nothing is lost,
nothing counted twice.

Delivered datums leave the buffer after CloudWatch accepted their call: a
segment whose datums all went is deleted, one partly delivered is rewritten
with what is left (the same rename). A kill between CloudWatch's acceptance and
that removal sends the call again at the next start: the one call in flight is
what a kill can double (PutMetricData has no idempotency token).

Bounded by ``max_bytes`` (the segments' size on disk) and ``max_datums`` (what
is held in memory, as the memory buffer): when a new segment would not fit,
the oldest segments are deleted and their datums counted as dropped; a single
cycle larger than either bound keeps its newest datums.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from indutech_metrics_shipper.convert import Datum, StatisticSet

_log = structlog.get_logger(__name__)

SUFFIX = ".seg"


def datum_record(datum: Datum) -> dict[str, Any]:
    """A datum as a compact JSON object (the inverse of ``datum_from_record``)."""
    record: dict[str, Any] = {"n": datum.name, "t": datum.timestamp, "u": datum.unit}
    if datum.dimensions:
        record["d"] = [list(pair) for pair in datum.dimensions]
    if datum.value is not None:
        record["v"] = datum.value
    if datum.values:
        record["vs"], record["cs"] = list(datum.values), list(datum.counts)
    if datum.statistics is not None:
        s = datum.statistics
        record["s"] = [s.sample_count, s.total, s.minimum, s.maximum]
    return record


def datum_from_record(record: Mapping[str, Any]) -> Datum:
    stats = record.get("s")
    return Datum(
        name=record["n"],
        dimensions=tuple((str(k), str(v)) for k, v in record.get("d", ())),
        timestamp=float(record["t"]),
        unit=record["u"],
        value=record.get("v"),
        values=tuple(record.get("vs", ())),
        counts=tuple(record.get("cs", ())),
        statistics=StatisticSet(*stats) if stats is not None else None,
    )


def _line(document: Mapping[str, Any]) -> bytes:
    # allow_nan=False: the converter drops NaN/Inf, so one here is a bug to see at once
    return json.dumps(document, separators=(",", ":"), allow_nan=False).encode() + b"\n"


@dataclass
class _Segment:
    seq: int
    path: Path
    datums: deque[Datum] = field(default_factory=deque)
    sizes: deque[int] = field(default_factory=deque)  # each datum's line, in bytes
    size: int = 0  # bytes on disk, header included


class DiskDatumBuffer:
    """The memory buffer's interface (``extend``, ``snapshot``, ``remove_first``, ``dropped``),
    each change on disk before it returns (blocking: a few small fsynced writes a cycle)."""

    def __init__(self, directory: Path, *, max_bytes: int, max_datums: int) -> None:
        if max_bytes < 1 or max_datums < 1:
            raise ValueError("a disk buffer needs max_bytes and max_datums of at least 1")
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_datums = max_datums
        self.dropped = 0
        self._segments: deque[_Segment] = deque()
        self._datums = 0
        self._bytes = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._load()
        self._next_seq = self._segments[-1].seq + 1 if self._segments else 1
        self.last_seq = self._next_seq - 1  # the newest segment written (0: none yet)

    # -- the buffer's interface ----------------------------------------------------------

    def extend(self, datums: Iterable[Datum]) -> int:
        """Write a cycle's datums as one segment (``last_seq``); returns how many buffered
        datums were dropped to make room (oldest first)."""
        batch = list(datums)
        if not batch:
            return 0
        header_bytes = len(_line({"seq": self._next_seq}))
        lines = [_line(datum_record(d)) for d in batch]
        # a cycle larger than the buffer keeps its newest datums
        size = header_bytes + sum(len(line) for line in lines)
        dropped = 0
        while dropped < len(batch) and (
            len(batch) - dropped > self.max_datums or size > self.max_bytes
        ):
            size -= len(lines[dropped])
            dropped += 1
        batch, lines = batch[dropped:], lines[dropped:]
        while self._segments and (
            self._datums + len(batch) > self.max_datums or self._bytes + size > self.max_bytes
        ):
            oldest = self._segments.popleft()
            oldest.path.unlink(missing_ok=True)
            self._datums -= len(oldest.datums)
            self._bytes -= oldest.size
            dropped += len(oldest.datums)
        if dropped:
            self.dropped += dropped
            _log.warning(
                "metric_buffer_full",
                dropped=dropped,
                max_bytes=self.max_bytes,
                max_datums=self.max_datums,
                why="CloudWatch has not taken the buffered datums; the oldest go first",
            )
        segment = _Segment(
            self._next_seq,
            self.directory / f"{self._next_seq:016d}{SUFFIX}",
            deque(batch),
            deque(len(line) for line in lines),
            size,
        )
        self._write(segment.path, [_line({"seq": segment.seq}), *lines])
        self.last_seq = segment.seq
        self._next_seq += 1
        self._segments.append(segment)
        self._datums += len(batch)
        self._bytes += size
        return dropped

    def snapshot(self) -> list[Datum]:
        return [datum for segment in self._segments for datum in segment.datums]

    def remove_first(self, count: int) -> None:
        """The first ``count`` datums were delivered: delete or rewrite their segments."""
        while count > 0 and self._segments:
            segment = self._segments[0]
            if count >= len(segment.datums):
                self._segments.popleft()
                segment.path.unlink(missing_ok=True)
                self._datums -= len(segment.datums)
                self._bytes -= segment.size
                count -= len(segment.datums)
                continue
            for _ in range(count):
                segment.datums.popleft()
                segment.sizes.popleft()
            self._datums -= count
            header = _line({"seq": segment.seq})
            lines = [_line(datum_record(d)) for d in segment.datums]
            self._write(segment.path, [header, *lines])
            size = len(header) + sum(segment.sizes)
            self._bytes += size - segment.size
            segment.size = size
            count = 0
        self._sync_directory()

    def __len__(self) -> int:
        return self._datums

    # -- what the worker needs at start ---------------------------------------------------

    def discard_after(self, seq: int) -> int:
        """Delete the segments numbered above ``seq`` (the last one the state file names: the
        others' state was never saved, their increases will be computed again); numbering
        goes on above ``seq``. Returns the datums deleted."""
        discarded = 0
        while self._segments and self._segments[-1].seq > seq:
            segment = self._segments.pop()
            segment.path.unlink()
            self._datums -= len(segment.datums)
            self._bytes -= segment.size
            discarded += len(segment.datums)
        if discarded:
            self._sync_directory()
            _log.info(
                "metric_buffer_uncommitted_discarded",
                datums=discarded,
                why="written just before a stop, with no state saved: computed again",
            )
        self._next_seq = max(self._next_seq, seq + 1)
        return discarded

    @property
    def size(self) -> int:
        """Bytes of the segments on disk."""
        return self._bytes

    # -- files ---------------------------------------------------------------------------

    def _write(self, path: Path, lines: list[bytes]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as out:
            out.writelines(lines)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        self._sync_directory()

    def _sync_directory(self) -> None:
        # the rename or unlink itself is durable only once the folder is synced
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _load(self) -> None:
        for tmp in self.directory.glob(f"*{SUFFIX}.tmp"):
            tmp.unlink()  # a write a kill cut short: its segment was never committed
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            try:
                segment = self._read(path)
            except (ValueError, KeyError, TypeError) as exc:
                aside = path.with_name(path.name + ".corrupt")
                os.replace(path, aside)
                _log.error(
                    "metric_buffer_segment_unreadable",
                    path=str(path),
                    moved_to=str(aside),
                    error=f"{type(exc).__name__}: {exc}",
                    what_next="its datums are not sent; inspect or delete the file",
                )
                continue
            if not segment.datums:
                path.unlink()
                continue
            self._segments.append(segment)
            self._datums += len(segment.datums)
            self._bytes += segment.size
        dropped = 0
        while len(self._segments) > 1 and (
            self._datums > self.max_datums or self._bytes > self.max_bytes
        ):  # the bounds may have been lowered since these were written
            oldest = self._segments.popleft()
            oldest.path.unlink()
            self._datums -= len(oldest.datums)
            self._bytes -= oldest.size
            dropped += len(oldest.datums)
        self.dropped += dropped
        if self._segments or dropped:
            _log.info(
                "metric_buffer_restored",
                segments=len(self._segments),
                datums=self._datums,
                bytes=self._bytes,
                dropped=dropped,
            )

    @staticmethod
    def _read(path: Path) -> _Segment:
        with path.open("rb") as source:
            raw = source.read()
        lines = raw.splitlines(keepends=True)
        if not lines or not raw.endswith(b"\n"):
            raise ValueError("empty or cut short")
        header = json.loads(lines[0])
        segment = _Segment(int(header["seq"]), path, size=len(raw))
        for line in lines[1:]:
            segment.datums.append(datum_from_record(json.loads(line)))
            segment.sizes.append(len(line))
        return segment
