"""The workers' JSON log files → CloudWatch Logs, each line once across restarts and kills.

Files are followed with ``indutech_common.tailing`` (globs, rotation by rename,
truncation, gzip, no symlinks). Each file identity (fingerprint) is one log
stream, so each stream has one writer and its events are one file's lines.

Batches keep PutLogEvents' limits: at most 10,000 events and 1,048,576 bytes
(UTF-8 message + 26 bytes an event), events in time order, at most 24 h apart.
An event's time is the line's own ``timestamp`` (structlog's ISO 8601) or, for
a line without one, the time it was read.

**Each line once.** The file offsets are checkpointed only after CloudWatch
accepted the batch; a kill between the accept and the checkpoint would send the
batch again. So before each put, the batch is written to an *in-flight*
record (stream, the offsets it covers, the file's checkpoint as it was — a
new file's first batch has no other — and a digest of each event's time and
message); after the put and the checkpoint, the record goes. At start, an
in-flight record left behind is checked against the stream: PutLogEvents
stores an accepted batch whole, so if the stream holds every (time, message)
of the record in its time range, the batch landed and the checkpoint moves past
it; otherwise it is read and sent again. One batch is in flight at a time.

**CloudWatch Logs away at start.** Creating the group and settling an in-flight
batch need CloudWatch; they are the first step of ``ship()``, not of the
worker's start, so the shipper starts (health, metrics) while Logs is away and
the logs loop retries with its jittered backoff until they succeed.

**Off the event loop.** Scanning and reading the files, parsing each line's
time, and the fsynced checkpoint writes run in a worker thread
(``asyncio.to_thread``): a large backlog takes its read time there, not from the
metrics cycle that shares the loop.

Events CloudWatch would refuse (older than 14 days, more than 2 h ahead) are
dropped before the put, logged and counted, never retried forever; a batch
refused otherwise (rejectedLogEventsInfo) is counted the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from indutech_common.tailing import FileState, FileTailer, LineKind, WatchSpec

if TYPE_CHECKING:
    from types_aiobotocore_logs import CloudWatchLogsClient

_log = structlog.get_logger(__name__)

MAX_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD = 26
MAX_SPAN_MS = 24 * 3600 * 1000
TOO_OLD_MS = 14 * 24 * 3600 * 1000 - 3600 * 1000  # 14 days, less an hour of margin
TOO_NEW_MS = 2 * 3600 * 1000 - 60 * 1000


@dataclass
class FileRead:
    """One file's part of a read: its events (in file order) and where the read ended."""

    state: FileState
    events: list[LogEvent] = field(default_factory=list)
    end: int = 0  # the byte offset after the last line read (events may end earlier)
    lines: int = 0  # lines read, events or not


@dataclass(frozen=True)
class LogEvent:
    timestamp_ms: int
    message: str
    end: int  # the byte offset after this line in its file

    @property
    def size(self) -> int:
        return len(self.message.encode()) + EVENT_OVERHEAD

    def digest(self) -> str:
        return hashlib.sha256(f"{self.timestamp_ms}\0{self.message}".encode()).hexdigest()[:20]


def event_time_ms(data: bytes, read_at_ms: int) -> int:
    """The line's own ``timestamp`` (ISO 8601, structlog's JSON), else when it was read."""
    if data.startswith(b"{"):
        try:
            value = json.loads(data).get("timestamp")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
            except ValueError:
                pass
    return read_at_ms


def batches(events: Sequence[LogEvent]) -> list[list[LogEvent]]:
    """File order kept across batches; each batch within PutLogEvents' limits."""
    out: list[list[LogEvent]] = []
    batch: list[LogEvent] = []
    size = 0
    low = high = 0
    for event in events:
        span_ok = not batch or (
            max(high, event.timestamp_ms) - min(low, event.timestamp_ms) <= MAX_SPAN_MS
        )
        if batch and (
            len(batch) >= MAX_EVENTS or size + event.size > MAX_BATCH_BYTES or not span_ok
        ):
            out.append(batch)
            batch, size = [], 0
        if not batch:
            low = high = event.timestamp_ms
        batch.append(event)
        size += event.size
        low, high = min(low, event.timestamp_ms), max(high, event.timestamp_ms)
    if batch:
        out.append(batch)
    return out


class LogCheckpoints:
    """Committed file offsets and the one in-flight batch, in a local directory (atomic writes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.offsets_path = directory / "log-offsets.json"
        self.inflight_path = directory / "log-inflight.json"

    def load_states(self) -> list[FileState]:
        if not self.offsets_path.exists():
            return []
        return [
            FileState.from_json_bytes(json.dumps(item).encode())
            for item in json.loads(self.offsets_path.read_text())
        ]

    @staticmethod
    def committed_item(state: FileState) -> dict[str, Any]:
        """A file's checkpoint: what CloudWatch has (the committed offset), not what was read."""
        item: dict[str, Any] = json.loads(state.to_json_bytes())
        item["offset"] = state.committed_offset
        item["lines"] = state.committed_lines
        item["complete"] = state.committed_complete
        return item

    def save_states(self, states: Iterable[FileState]) -> None:
        _write_atomic(self.offsets_path, json.dumps([self.committed_item(s) for s in states]))

    def write_inflight(self, record: dict[str, Any]) -> None:
        _write_atomic(self.inflight_path, json.dumps(record))

    def inflight(self) -> dict[str, Any] | None:
        if not self.inflight_path.exists():
            return None
        return dict(json.loads(self.inflight_path.read_text()))

    def clear_inflight(self) -> None:
        self.inflight_path.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class LogShipper:
    """Reads the log files and sends them, a stream per file, each line once."""

    def __init__(
        self,
        client: CloudWatchLogsClient,
        *,
        root: Path,
        patterns: tuple[str, ...],
        group: str,
        checkpoints: LogCheckpoints,
    ) -> None:
        self._client = client
        self.group = group
        self.checkpoints = checkpoints
        self.tailer = FileTailer(root, [WatchSpec("logs", patterns)], tail_settle_s=None)
        self._streams: set[str] = set()
        self.ready = False  # the group exists and the in-flight batch is settled
        self.events_sent = 0
        self.events_dropped = 0
        self.calls = 0

    @staticmethod
    def stream_name(state: FileState) -> str:
        # a fingerprint is unique per file identity; the path makes it readable
        path = state.path.replace(":", "_").replace("*", "_")[-300:]
        return f"{path}#{state.fingerprint}"

    async def start(self) -> None:
        """Create the group if missing, settle a batch left in flight, resume the files.

        Needs CloudWatch Logs, so it raises while Logs is away; ``ship()`` calls it until it
        has succeeded once (it can be repeated: the in-flight record goes only once settled).
        """
        if self.ready:
            return
        with contextlib.suppress(self._client.exceptions.ResourceAlreadyExistsException):
            await self._client.create_log_group(logGroupName=self.group)
        states = {s.fingerprint: s for s in await asyncio.to_thread(self.checkpoints.load_states)}
        record = await asyncio.to_thread(self.checkpoints.inflight)
        if record is not None:
            landed = await self._landed(record)
            _log.info("log_inflight_checked", stream=record["stream"], landed=landed)
            state = states.get(record["fingerprint"])
            if landed and state is None and "file" in record:
                # the file's first batch: no checkpoint knew the file before it, so the
                # record carries the file's own (it was sent again from line 0 without)
                state = FileState.from_json_bytes(json.dumps(record["file"]).encode())
                states[state.fingerprint] = state
            if landed and state is not None:
                state.offset = state.committed_offset = max(state.committed_offset, record["end"])
                await asyncio.to_thread(self.checkpoints.save_states, states.values())
            await asyncio.to_thread(self.checkpoints.clear_inflight)
        self.tailer.restore(states.values())
        self.ready = True

    async def _landed(self, record: dict[str, Any]) -> bool:
        """Every (time, message) of the record is in its stream: the put was accepted."""
        wanted: dict[str, int] = {}
        for digest in record["digests"]:
            wanted[digest] = wanted.get(digest, 0) + 1
        kwargs: dict[str, Any] = {
            "logGroupName": self.group,
            "logStreamName": record["stream"],
            "startTime": record["first_ms"],
            "endTime": record["last_ms"] + 1,
            "startFromHead": True,
        }
        try:
            while True:
                page = await self._client.get_log_events(**kwargs)
                for event in page.get("events", []):
                    digest = LogEvent(event["timestamp"], event["message"], 0).digest()
                    if wanted.get(digest, 0) > 0:
                        wanted[digest] -= 1
                token = page.get("nextForwardToken")
                if not page.get("events") or token == kwargs.get("nextToken"):
                    break
                kwargs["nextToken"] = token
        except self._client.exceptions.ResourceNotFoundException:
            return False
        return all(count == 0 for count in wanted.values())

    async def ship(self, *, max_lines: int = MAX_EVENTS) -> int:
        """Read what the files have and send it; returns the lines read (``max_lines``: the
        files may have more). Raises on an outage with nothing committed past what
        CloudWatch has (the caller backs off and retries)."""
        await self.start()
        read_at = int(time.time() * 1000)
        files = await asyncio.to_thread(self.read, max_lines, read_at)
        try:
            for file in files:
                await self._ship_file(file)
        except Exception:
            self.tailer.rewind()  # nothing past the committed offsets is kept in memory
            raise
        return sum(file.lines for file in files)

    def read(self, max_lines: int, read_at_ms: int) -> list[FileRead]:
        """The next lines of the files as events, by file (blocking: run it in a thread)."""
        self.tailer.scan()
        files: dict[str, FileRead] = {}
        for line in self.tailer.read(max_lines):
            file = files.get(line.state.fingerprint)
            if file is None:
                file = files[line.state.fingerprint] = FileRead(line.state)
            file.end, file.lines = line.end, file.lines + 1
            if line.kind in (LineKind.LINE, LineKind.UNTERMINATED, LineKind.TOO_LONG):
                message = line.data.decode("utf-8", errors="replace")
                file.events.append(
                    LogEvent(event_time_ms(line.data, read_at_ms), message, line.end)
                )
        return list(files.values())

    async def _ship_file(self, file: FileRead) -> None:
        state, events = file.state, file.events
        stream = self.stream_name(state)
        await self._ensure_stream(stream)
        now = int(time.time() * 1000)
        sendable = [e for e in events if now - TOO_OLD_MS <= e.timestamp_ms <= now + TOO_NEW_MS]
        if len(sendable) < len(events):
            self.events_dropped += len(events) - len(sendable)
            _log.warning(
                "log_events_out_of_range",
                stream=stream,
                dropped=len(events) - len(sendable),
                why="older than 14 days or more than 2 h ahead: CloudWatch refuses them",
            )
        batch_list = batches(sendable) or [[]]
        for index, batch in enumerate(batch_list):
            end = batch[-1].end if batch and index < len(batch_list) - 1 else file.end
            if batch:
                await self._put(stream, state, batch, end)
            state.committed_offset = end
            await asyncio.to_thread(self._commit_batch)
        state.committed_offset = state.offset
        state.committed_lines = state.lines
        state.committed_complete = state.complete
        await asyncio.to_thread(self.checkpoints.save_states, list(self.tailer.states.values()))

    def _commit_batch(self) -> None:
        self.checkpoints.save_states(list(self.tailer.states.values()))
        self.checkpoints.clear_inflight()

    async def _put(self, stream: str, state: FileState, batch: list[LogEvent], end: int) -> None:
        ordered = sorted(batch, key=lambda e: e.timestamp_ms)  # the API wants time order
        await asyncio.to_thread(
            self.checkpoints.write_inflight,
            {
                "stream": stream,
                "fingerprint": state.fingerprint,
                "file": self.checkpoints.committed_item(state),
                "end": end,
                "first_ms": ordered[0].timestamp_ms,
                "last_ms": ordered[-1].timestamp_ms,
                "digests": [e.digest() for e in ordered],
            },
        )
        response = await self._client.put_log_events(
            logGroupName=self.group,
            logStreamName=stream,
            logEvents=[{"timestamp": e.timestamp_ms, "message": e.message} for e in ordered],
        )
        self.calls += 1
        rejected = response.get("rejectedLogEventsInfo")
        if rejected:
            self.events_dropped += _rejected_count(rejected, len(ordered))
            _log.warning("log_events_rejected", stream=stream, info=dict(rejected))
        self.events_sent += len(ordered) - (
            _rejected_count(rejected, len(ordered)) if rejected else 0
        )

    async def _ensure_stream(self, stream: str) -> None:
        if stream in self._streams:
            return
        with contextlib.suppress(self._client.exceptions.ResourceAlreadyExistsException):
            await self._client.create_log_stream(logGroupName=self.group, logStreamName=stream)
        self._streams.add(stream)

    def close(self) -> None:
        self.tailer.close()


def _rejected_count(info: Any, total: int) -> int:
    """How many events rejectedLogEventsInfo names (indices: before/after, expired)."""
    count = 0
    if "tooNewLogEventStartIndex" in info:
        count += total - int(info["tooNewLogEventStartIndex"])
    if "tooOldLogEventEndIndex" in info:
        count += int(info["tooOldLogEventEndIndex"])
    if "expiredLogEventEndIndex" in info:
        count = max(count, int(info["expiredLogEventEndIndex"]))
    return min(count, total)
