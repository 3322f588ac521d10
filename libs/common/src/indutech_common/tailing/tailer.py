"""The tailer: find files by glob, identify them by content, hand out complete lines.

Blocking file I/O (call it from a thread when the loop must stay responsive).
One :class:`FileTailer` follows many files; each open file is a ``_Tracker``
keyed by (device, inode) for the life of the open descriptor, while the
durable identity is the :class:`FileState` keyed by fingerprint:

- rename (rotation): the descriptor follows the inode, so the old file is read
  to its end; the new file at the old name is a new fingerprint;
- truncation: the size drops below the offset read; the file is identified
  again, and a same-prefix content gets a new generation;
- remount/copy: a new inode whose prefix matches a known state resumes at that
  state's offset (while another tracker holds the state, the newcomer waits);
- ``.gz`` files are read once they stop changing (``gzip_settle_s``), on their
  decompressed content; a truncated or corrupt stream yields a
  ``truncated_gzip``/``corrupt_gzip`` line for the rest and the file is done.

Only lines ended by a newline are handed out (the final line of a ``.gz`` is
complete at end of stream), except that with ``tail_settle_s`` set, the
unterminated rest of a file that has not grown for that long is handed out as
an ``unterminated`` line (the writer is done with it). A line longer than
``max_line_bytes`` is handed out as ``too_long`` with its first ``keep_bytes``
once its end is found; it is never buffered whole, and
:meth:`FileTailer.line_reader` reads it again whole from its file.

Files are found without following symbolic links and opened with
``O_NOFOLLOW`` (``paths.py``): nothing outside the root is ever read. A link, or
a regular file that no spec matches, is reported once (log and ``on_skipped``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
import zlib
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

import structlog

from indutech_common.tailing.exceptions import TailingError
from indutech_common.tailing.fingerprint import prefix_hash
from indutech_common.tailing.paths import OutsideRootError, glob_regex, inside, open_under, walk
from indutech_common.tailing.state import FileState

_log = structlog.get_logger(__name__)

_READ_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_Inode = tuple[int, int]
_PARK = "park"
_RETRY = "retry"
_REPORTED_MAX = 100_000  # paths remembered as reported (then forgotten and reported again)
_NEVER = float("inf")


class SkipReason(StrEnum):
    """Why a file under the root is not read (each path is reported once)."""

    NO_ROUTE = "no_route"  # a regular file that no spec's patterns match
    SYMLINK = "symlink"  # a link whose target is under the root (read under its own name)
    SYMLINK_OUTSIDE = "symlink_outside"  # a link leading out of the root: refused
    NOT_REGULAR = "not_regular"  # a FIFO, socket or device matching a pattern


class LineKind(StrEnum):
    LINE = "line"
    HEADER = "header"
    TOO_LONG = "too_long"
    TRUNCATED_GZIP = "truncated_gzip"
    CORRUPT_GZIP = "corrupt_gzip"
    UNTERMINATED = "unterminated"  # the last line of a settled file, without its newline


@dataclass(frozen=True)
class WatchSpec:
    """One group of files: glob patterns relative to the root, and how to fingerprint them.

    ``header_lines`` first lines of each file are handed out as ``HEADER``
    (a CSV header); the fingerprint covers at least ``header_lines + 1`` lines
    (or ``fingerprint_bytes``), so files sharing a header are told apart.
    """

    name: str
    patterns: tuple[str, ...]
    header_lines: int = 0


class Line(NamedTuple):
    """One line handed out: ``data`` without its newline, from ``offset`` to ``end``.

    A named tuple, not a dataclass: one is made per line, and a frozen
    dataclass costs several times more to build.
    """

    spec: str
    state: FileState
    offset: int
    end: int
    data: bytes
    kind: LineKind = LineKind.LINE
    error: str | None = None
    header: bytes | None = None
    length: int = 0


@dataclass
class _Tracker:
    key: _Inode
    path: str
    spec: WatchSpec
    fd: int
    gzip: bool
    state: FileState
    header: bytes | None = None
    read_pos: int = 0
    buf: bytearray = field(default_factory=bytearray)
    skipping: bool = False
    skip_start: int = 0
    skip_keep: bytes = b""
    raw_pos: int = 0
    inflater: zlib._Decompress | None = None
    at_eof: bool = False
    last_size: int = -1
    end_kind: LineKind | None = None
    end_error: str | None = None
    end_sample: bytes = b""
    seen: bool = True
    last_data: float = field(default_factory=time.monotonic)
    size_seen: int = -1  # the size found by the last read (plain files)
    grew_at: float = field(default_factory=time.monotonic)  # when that size last changed

    def reset_reader(self) -> None:
        """Forget everything read past ``state.offset`` (after a rewind)."""
        self.buf.clear()
        self.skipping = False
        self.skip_keep = b""
        self.at_eof = False
        self.end_kind = None
        self.end_error = None
        self.end_sample = b""
        if self.gzip:
            self.read_pos = 0
            self.raw_pos = 0
            self.inflater = None
        else:
            self.read_pos = self.state.offset


class FileTailer:
    """Follows the files of several :class:`WatchSpec` under ``root``."""

    def __init__(
        self,
        root: Path,
        specs: Iterable[WatchSpec],
        *,
        fingerprint_bytes: int = 1024,
        max_line_bytes: int = 1 << 20,
        keep_bytes: int = 64 * 1024,
        gzip_settle_s: float = 1.0,
        close_idle_s: float = 30.0,
        gone_idle_s: float = 2.0,
        tail_settle_s: float | None = None,
        on_skipped: Callable[[str, SkipReason], None] | None = None,
    ) -> None:
        self.root = root
        self.specs = tuple(specs)
        if not self.specs:
            raise TailingError("the tailer needs at least one watch spec")
        self._matchers = [(spec, glob_regex(spec.patterns).match) for spec in self.specs]
        self.tail_settle_s = tail_settle_s
        self.on_skipped = on_skipped
        self._routes: dict[str, WatchSpec | None] = {}  # relative path -> its spec (a cache)
        self._reported: set[str] = set()  # relative paths already reported as skipped
        self._park_until: dict[_Inode, float] = {}  # parked without a fingerprint: look again
        self._root_unreadable = False
        self.fingerprint_bytes = fingerprint_bytes
        self.max_line_bytes = max_line_bytes
        self.keep_bytes = min(keep_bytes, max_line_bytes)
        self.gzip_settle_s = gzip_settle_s
        self.close_idle_s = close_idle_s
        self.gone_idle_s = gone_idle_s
        self.states: dict[str, FileState] = {}
        self._latest: dict[tuple[int, str], FileState] = {}
        self._lengths: set[int] = set()
        self._trackers: dict[_Inode, _Tracker] = {}
        self._held: dict[str, _Inode] = {}  # fingerprint -> the tracker reading it
        self._parked: dict[_Inode, tuple[int, int]] = {}  # nothing to do until size/mtime change
        self._parked_fingerprint: dict[_Inode, str] = {}  # the state a parked file belongs to
        self._last_seen: dict[str, float] = {}  # fingerprint -> when a scan last found its file
        self._found_files = False  # the last scan found at least one file
        self._gzip_seen: dict[_Inode, tuple[int, int, float]] = {}
        self._truncated_from: dict[_Inode, FileState] = {}

    # -- checkpoints ---------------------------------------------------------------------

    def restore(self, states: Iterable[FileState]) -> None:
        """Load committed states (the latest generation of each prefix wins)."""
        now = time.monotonic()
        for state in states:
            self._index(state)
            self._last_seen[state.fingerprint] = now  # the forgetting clock starts now

    def forget_unseen(self, after_s: float) -> list[FileState]:
        """Drop the states whose file no scan has found for ``after_s`` (in this process).

        The caller deletes their checkpoints (a tombstone on a compacted topic), so
        the checkpoints of deleted files do not pile up forever. Never while the
        last scan found no file at all (an unmounted SAN is not a deletion), never
        a state with uncommitted progress or an open file. Content that comes back
        after being forgotten is read again from its start.
        """
        if not self._found_files:
            return []
        now = time.monotonic()
        forgotten = [
            state
            for fingerprint, state in self.states.items()
            if fingerprint not in self._held
            and not state.dirty
            and now - self._last_seen.setdefault(fingerprint, now) >= after_s
        ]
        for state in forgotten:
            del self.states[state.fingerprint]
            del self._last_seen[state.fingerprint]
        if forgotten:
            self._latest = {}
            for state in self.states.values():
                key = (state.fingerprint_len, state.base)
                known = self._latest.get(key)
                if known is None or state.generation >= known.generation:
                    self._latest[key] = state
            self._lengths = {state.fingerprint_len for state in self.states.values()}
            gone = {state.fingerprint for state in forgotten}
            self._parked_fingerprint = {
                key: fp for key, fp in self._parked_fingerprint.items() if fp not in gone
            }
        return forgotten

    def _index(self, state: FileState) -> None:
        self.states[state.fingerprint] = state
        self._lengths.add(state.fingerprint_len)
        key = (state.fingerprint_len, state.base)
        known = self._latest.get(key)
        if known is None or state.generation >= known.generation:
            self._latest[key] = state

    def dirty_states(self) -> list[FileState]:
        """States whose progress is not yet committed (to checkpoint with the records)."""
        return [state for state in self.states.values() if state.dirty]

    def mark_committed(self, states: Iterable[FileState]) -> None:
        """The caller made these states durable."""
        for state in states:
            state.committed_offset = state.offset
            state.committed_lines = state.lines
            state.committed_complete = state.complete

    def rewind(self) -> None:
        """Go back to the committed states (after an aborted transaction)."""
        for state in self.states.values():
            state.offset = state.committed_offset
            state.lines = state.committed_lines
            state.complete = state.committed_complete
        for tracker in self._trackers.values():
            tracker.reset_reader()
        self._parked.clear()
        self._parked_fingerprint.clear()
        self._park_until.clear()

    # -- discovery -----------------------------------------------------------------------

    def scan(self) -> None:
        """Find files, follow renames and truncations, close idle or vanished ones."""
        for tracker in self._trackers.values():
            tracker.seen = False
        seen: set[_Inode] = set()
        now = time.monotonic()
        for spec, relative, path, st in self._candidates():
            key = (st.st_dev, st.st_ino)
            seen.add(key)
            tracked = self._trackers.get(key)
            if tracked is not None:
                tracked.seen = True
                self._last_seen[tracked.state.fingerprint] = now
                if tracked.path != path:
                    _log.info("file_renamed", old=tracked.path, new=path)
                    tracked.path = path
                    tracked.state.path = path
                if not tracked.gzip and st.st_size != tracked.last_size:
                    tracked.last_size = st.st_size
                    self._check_prefix(tracked, st.st_size)
                continue
            if self._parked.get(key) == (st.st_size, st.st_mtime_ns) and (
                now < self._park_until.get(key, _NEVER)
            ):
                fingerprint = self._parked_fingerprint.get(key)
                if fingerprint is not None:
                    self._last_seen[fingerprint] = now
                continue
            self._discover(spec, relative, Path(path), key, st)
        self._found_files = bool(seen)
        for key in [k for k in self._parked if k not in seen]:
            del self._parked[key]
            self._parked_fingerprint.pop(key, None)
            self._park_until.pop(key, None)
        for key in [k for k in self._gzip_seen if k not in seen]:
            del self._gzip_seen[key]
        self._close_finished()

    def _candidates(self) -> Iterable[tuple[WatchSpec, str, str, os.stat_result]]:
        """The regular files a spec matches (the first spec wins), with their ``lstat``.

        The root is walked without following links; links and files no spec matches
        are reported once each. The spec of each relative path is cached (the
        patterns do not change), so a scan costs one directory walk and one ``lstat``
        per matched file.
        """
        routes: dict[str, WatchSpec | None] = {}
        known = self._routes
        try:
            entries = list(walk(str(self.root)))
        except OSError as exc:  # the root itself: an unmounted SAN shows no file, as before
            if not self._root_unreadable:
                _log.warning("root_unreadable", path=str(self.root), error=str(exc))
            self._root_unreadable = True
            return
        self._root_unreadable = False
        for relative, entry in entries:
            if relative in known:
                spec = known[relative]
            else:
                spec = next((s for s, match in self._matchers if match(relative)), None)
            routes[relative] = spec
            try:
                if entry.is_symlink():
                    self._report_link(relative, entry.path)
                    continue
                if spec is None:
                    if entry.is_file(follow_symlinks=False):
                        self._report(relative, SkipReason.NO_ROUTE)
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone between the listing and now
            if not stat.S_ISREG(st.st_mode):
                self._report(relative, SkipReason.NOT_REGULAR)
                continue
            yield spec, relative, entry.path, st
        self._routes = routes

    def _report_link(self, relative: str, path: str) -> None:
        if relative in self._reported:
            return
        if inside(str(self.root), path):
            self._report(relative, SkipReason.SYMLINK)
        else:
            self._report(relative, SkipReason.SYMLINK_OUTSIDE)

    def _report(self, relative: str, reason: SkipReason) -> None:
        """Log a skipped path once (hidden names, a writer's temporary files, are not
        reported when no spec matches them) and tell ``on_skipped``."""
        if relative in self._reported:
            return
        if reason is SkipReason.NO_ROUTE and relative.rsplit("/", 1)[-1].startswith("."):
            return
        if len(self._reported) >= _REPORTED_MAX:
            self._reported.clear()
        self._reported.add(relative)
        path = str(self.root / relative)
        if reason is SkipReason.SYMLINK_OUTSIDE:
            _log.warning(
                "file_refused",
                path=path,
                reason=str(reason),
                hint="a symbolic link leading out of the watched directory is never read; "
                "copy the file into it instead",
            )
        elif reason is SkipReason.NO_ROUTE:
            _log.warning(
                "file_unmatched",
                path=path,
                reason=str(reason),
                hint="no route's glob patterns match this file, so it is not read: rename it "
                "or add a pattern (a writer's temporary files should start with '.')",
            )
        else:
            _log.info(
                "file_skipped",
                path=path,
                reason=str(reason),
                hint="symbolic links are never followed (a target under the watched "
                "directory is read under its own name); only regular files are read",
            )
        if self.on_skipped is not None:
            self.on_skipped(path, reason)

    def _discover(
        self, spec: WatchSpec, relative: str, path: Path, key: _Inode, st: os.stat_result
    ) -> None:
        gzip = path.name.endswith(".gz")
        if gzip and not self._gzip_settled(key, st):
            return
        try:
            fd = open_under(self.root, relative)
        except OutsideRootError as exc:  # swapped for a link since the walk
            self._report(relative, SkipReason.SYMLINK)
            _log.info("file_open_refused", path=str(path), error=str(exc))
            return
        except OSError as exc:
            _log.warning("file_open_failed", path=str(path), error=str(exc))
            return
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != key:
                os.close(fd)  # replaced since the walk: the next scan sees the new file
                return
            prefix = self._read_prefix(fd, gzip=gzip)
            settled = not gzip and self._settled_since(st) >= 0
            state = self._identify(
                spec, path, key, prefix, gzip=gzip, size=st.st_size, settled=settled
            )
        except OSError as exc:
            os.close(fd)
            _log.warning("file_read_failed", path=str(path), error=str(exc))
            return
        if isinstance(state, FileState):
            self._last_seen[state.fingerprint] = time.monotonic()
        if not isinstance(state, FileState) or state.complete:
            os.close(fd)
            if state != _RETRY:  # a twin waits for the tracker holding its state to close
                self._parked[key] = (st.st_size, st.st_mtime_ns)
                if isinstance(state, FileState):
                    self._parked_fingerprint[key] = state.fingerprint
                elif not gzip and (wait := -self._settled_since(st)) > 0 and wait < _NEVER:
                    # too short for a fingerprint and no newline yet: once it has not
                    # changed for tail_settle_s, its whole content is the fingerprint
                    # (already settled and still too short, e.g. a CSV header alone:
                    # parked until it changes)
                    self._park_until[key] = time.monotonic() + wait
            return
        tracker = _Tracker(key=key, path=str(path), spec=spec, fd=fd, gzip=gzip, state=state)
        # the tail settle time runs from the file's last change (its mtime), not from now
        tracker.grew_at = time.monotonic() - max(0.0, time.time() - st.st_mtime)
        tracker.size_seen = st.st_size
        if spec.header_lines:
            tracker.header = _first_lines(prefix, spec.header_lines)
        tracker.reset_reader()
        self._trackers[key] = tracker
        self._held[state.fingerprint] = key
        self._truncated_from.pop(key, None)
        self._park_until.pop(key, None)
        _log.info(
            "file_tracked",
            path=str(path),
            fingerprint=state.fingerprint,
            offset=state.offset,
            generation=state.generation,
        )

    def _settled_since(self, st: os.stat_result) -> float:
        """Seconds since the file's tail settled (negative: not yet; -inf: never settles)."""
        if self.tail_settle_s is None:
            return -_NEVER
        return time.time() - st.st_mtime - self.tail_settle_s

    def _gzip_settled(self, key: _Inode, st: os.stat_result) -> bool:
        now = time.monotonic()
        previous = self._gzip_seen.get(key)
        if previous is None or previous[:2] != (st.st_size, st.st_mtime_ns):
            self._gzip_seen[key] = (st.st_size, st.st_mtime_ns, now)
            return False
        return now - previous[2] >= self.gzip_settle_s

    def _read_prefix(self, fd: int, *, gzip: bool) -> bytes:
        if not gzip:
            return os.pread(fd, self.fingerprint_bytes, 0)
        raw = os.pread(fd, _READ_CHUNK, 0)
        inflater = zlib.decompressobj(wbits=31)
        try:
            return inflater.decompress(raw, self.fingerprint_bytes)
        except zlib.error:
            return raw[: self.fingerprint_bytes]  # identity of a corrupt file: its raw bytes

    def _identify(
        self,
        spec: WatchSpec,
        path: Path,
        key: _Inode,
        prefix: bytes,
        *,
        gzip: bool,
        size: int,
        settled: bool = False,
    ) -> FileState | str:
        """The state of this content, or _PARK (not enough bytes yet) or _RETRY (a twin)."""
        for length in sorted(self._lengths, reverse=True):
            if length <= len(prefix):
                known = self._latest.get((length, prefix_hash(prefix[:length])))
                if known is not None:
                    return self._resume(known, path, key, size=size, gzip=gzip)
        length = self._fingerprint_length(spec, prefix, complete=gzip, settled=settled)
        if length == 0:
            return _PARK
        base = prefix_hash(prefix[:length])
        known = self._latest.get((length, base))
        if known is not None:
            return self._resume(known, path, key, size=size, gzip=gzip)
        state = FileState(base=base, fingerprint_len=length, path=str(path))
        self._index(state)
        return state

    def _fingerprint_length(
        self, spec: WatchSpec, prefix: bytes, *, complete: bool, settled: bool = False
    ) -> int:
        """How many first bytes identify the file: ``fingerprint_bytes``, or at least the
        header lines and one more line; 0 while a plain file has fewer.

        A ``settled`` plain file (unchanged for ``tail_settle_s``) whose header lines are
        followed by an unterminated line is identified by its whole content; one with
        nothing after its header is not (every file with that header would match it).
        """
        if len(prefix) >= self.fingerprint_bytes:
            return self.fingerprint_bytes
        end = 0
        for index in range(spec.header_lines + 1):
            newline = prefix.find(b"\n", end)
            if newline < 0:
                if complete or (settled and index == spec.header_lines and len(prefix) > end):
                    return len(prefix)
                return 0
            end = newline + 1
        return end

    def _resume(
        self, known: FileState, path: Path, key: _Inode, *, size: int, gzip: bool
    ) -> FileState | str:
        holder = self._held.get(known.fingerprint)
        if holder is not None and holder != key and holder in self._trackers:
            return _RETRY  # a copy or a remounted twin: the open tracker keeps the state
        truncated = self._truncated_from.get(key) is known or (not gzip and known.offset > size)
        if not truncated:
            known.path = str(path)
            return known
        state = FileState(
            base=known.base,
            fingerprint_len=known.fingerprint_len,
            path=str(path),
            generation=known.generation + 1,
        )
        _log.info("file_new_generation", path=str(path), generation=state.generation)
        self._index(state)
        return state

    # -- reading -------------------------------------------------------------------------

    def read(self, max_lines: int) -> list[Line]:
        """Up to ``max_lines`` complete lines from the tracked files, advancing their states."""
        lines: list[Line] = []
        for tracker in list(self._trackers.values()):
            if len(lines) >= max_lines:
                break
            try:
                self._read_tracker(tracker, lines, max_lines)
            except OSError as exc:
                _log.warning("file_read_failed", path=tracker.path, error=str(exc))
                self._close(tracker)
        return lines

    def _read_tracker(self, tracker: _Tracker, out: list[Line], max_lines: int) -> None:
        before = len(out)
        self._drain_buffer(tracker, out, max_lines)
        while len(out) < max_lines:
            chunk = self._next_chunk(tracker)
            if chunk is None:
                break
            tracker.buf += chunk
            tracker.read_pos += len(chunk)
            self._drain_buffer(tracker, out, max_lines)
        if (
            (tracker.buf or tracker.skipping)
            and len(out) < max_lines
            and self.tail_settle_s is not None
            and not tracker.gzip
        ):
            self._settle_tail(tracker, out)
        if len(out) > before:
            tracker.last_data = time.monotonic()

    def _settle_tail(self, tracker: _Tracker, out: list[Line]) -> None:
        """Hand out the unterminated rest of a file that stopped growing ``tail_settle_s`` ago.

        Only at the end of the file as last read (a truncation closes the tracker) and
        after the header lines; the next bytes, if the writer comes back, start a new line.
        """
        settle = self.tail_settle_s
        if (
            settle is None
            or self._trackers.get(tracker.key) is not tracker
            or tracker.size_seen != tracker.read_pos
            or tracker.state.lines < tracker.spec.header_lines
            or time.monotonic() - tracker.grew_at < settle
        ):
            return
        state = tracker.state
        start = tracker.skip_start if tracker.skipping else state.offset
        if tracker.skipping:
            tracker.skipping = False
            end = tracker.read_pos
            line = self._emit(
                tracker, start, end, tracker.skip_keep, LineKind.TOO_LONG, length=end - start
            )
        else:
            data = bytes(tracker.buf)
            line = self._emit(tracker, start, start + len(data), data, LineKind.UNTERMINATED)
        tracker.buf.clear()
        out.append(line)
        _log.warning(
            "unterminated_line",
            path=tracker.path,
            offset=start,
            bytes=line.length,
            settle_s=settle,
            hint="the file's last line has no newline and the file has not changed for "
            "settle_s: it is handed out as a line; writers should end every line with \\n",
        )

    def _next_chunk(self, tracker: _Tracker) -> bytes | None:
        if tracker.at_eof:
            return None
        if tracker.gzip:
            return self._next_gzip_chunk(tracker)
        size = os.fstat(tracker.fd).st_size
        if size != tracker.size_seen:
            tracker.size_seen = size
            tracker.grew_at = time.monotonic()
        if size < tracker.read_pos or size < tracker.state.offset:
            self._truncated(tracker, size)
            return None
        if size == tracker.read_pos:
            return None
        chunk = os.pread(tracker.fd, min(_READ_CHUNK, size - tracker.read_pos), tracker.read_pos)
        return chunk or None

    def _next_gzip_chunk(self, tracker: _Tracker) -> bytes | None:
        """The next decompressed bytes (at most one chunk: no gzip bomb fills memory)."""
        while True:
            raw = self._next_gzip_input(tracker)
            if raw is None:
                return None
            inflater = tracker.inflater
            if inflater is None:
                inflater = tracker.inflater = zlib.decompressobj(wbits=31)
            try:
                out = inflater.decompress(raw, _READ_CHUNK)
            except zlib.error as exc:
                sample = raw[: self.keep_bytes]
                self._gzip_end(tracker, LineKind.CORRUPT_GZIP, f"corrupt gzip data: {exc}", sample)
                return None
            if inflater.eof:
                rest = inflater.unused_data
                tracker.inflater = None
                if rest.startswith(_GZIP_MAGIC):
                    tracker.raw_pos -= len(rest)  # the next member starts there
                elif rest:
                    tracker.raw_pos = os.fstat(tracker.fd).st_size  # trailing garbage ignored
            # decompressed bytes before state.offset were handed out already (a resume)
            skip = min(tracker.state.offset - tracker.read_pos, len(out))
            if skip > 0:
                tracker.read_pos += skip
                out = out[skip:]
            if out:
                return out

    def _next_gzip_input(self, tracker: _Tracker) -> bytes | None:
        """Compressed bytes to feed next; None (and the end noted) at the end of the file."""
        inflater = tracker.inflater
        if inflater is not None and inflater.unconsumed_tail:
            return inflater.unconsumed_tail
        raw = os.pread(tracker.fd, _READ_CHUNK, tracker.raw_pos)
        if not raw:
            if inflater is not None:
                self._gzip_end(tracker, LineKind.TRUNCATED_GZIP, "gzip stream ended early")
            else:
                self._gzip_end(tracker, None, None)
            return None
        tracker.raw_pos += len(raw)
        return raw

    def _gzip_end(
        self, tracker: _Tracker, kind: LineKind | None, error: str | None, sample: bytes = b""
    ) -> None:
        """End of a gzip file: the unterminated rest is a last line, or the error's line."""
        tracker.at_eof = True
        tracker.end_kind = kind
        tracker.end_error = error
        tracker.end_sample = sample

    def _drain_buffer(self, tracker: _Tracker, out: list[Line], max_lines: int) -> None:
        state = tracker.state
        if not tracker.skipping and state.lines >= tracker.spec.header_lines:
            self._drain_plain_lines(tracker, out, max_lines)
        while len(out) < max_lines:
            if tracker.skipping:
                newline = tracker.buf.find(b"\n")
                if newline < 0:
                    tracker.buf.clear()
                    break
                end = tracker.read_pos - len(tracker.buf) + newline + 1
                del tracker.buf[: newline + 1]
                tracker.skipping = False
                out.append(
                    self._emit(
                        tracker,
                        tracker.skip_start,
                        end,
                        tracker.skip_keep,
                        LineKind.TOO_LONG,
                        length=end - 1 - tracker.skip_start,
                    )
                )
                continue
            newline = tracker.buf.find(b"\n", 0, self.max_line_bytes + 1)
            if newline < 0:
                if len(tracker.buf) > self.max_line_bytes:
                    tracker.skipping = True
                    tracker.skip_start = state.offset
                    tracker.skip_keep = bytes(tracker.buf[: self.keep_bytes])
                    del tracker.buf[: self.max_line_bytes]  # the rest may hold its end
                    continue
                if tracker.at_eof and tracker.gzip and not state.complete:
                    self._finish_gzip(tracker, out)  # once: a second call would repeat its error
                break
            data = bytes(tracker.buf[:newline])
            del tracker.buf[: newline + 1]
            start = state.offset
            kind = LineKind.LINE
            if state.lines < tracker.spec.header_lines:
                kind = LineKind.HEADER
            out.append(self._emit(tracker, start, start + newline + 1, data, kind))

    def _drain_plain_lines(self, tracker: _Tracker, out: list[Line], max_lines: int) -> None:
        """The common case in bulk: complete lines of normal length, one split per buffer.

        Per-line work in Python is what limits a tailer's rate, so this hands out
        the lines of the buffer with one ``split`` and one state update; it stops
        before a line over ``max_line_bytes`` and leaves that (and anything
        unusual) to the line-by-line loop of :meth:`_drain_buffer`.
        """
        wanted = max_lines - len(out)
        buf = tracker.buf
        last_newline = buf.rfind(b"\n")
        if wanted <= 0 or last_newline < 0:
            return
        pieces = bytes(buf[: last_newline + 1]).split(b"\n", wanted)
        # the piece after the last split is either the empty tail of the region or
        # the unsplit rest beyond ``wanted`` lines: neither is handed out here
        pieces.pop()
        state = tracker.state
        spec_name = tracker.spec.name
        header = tracker.header
        limit = self.max_line_bytes
        plain = LineKind.LINE
        start = state.offset
        emitted = 0
        for data in pieces:
            length = len(data)
            if length > limit:
                break
            end = start + length + 1
            # tuple.__new__ skips the generated Python __new__ of the named tuple
            line = (spec_name, state, start, end, data, plain, None, header, length)
            out.append(tuple.__new__(Line, line))
            start = end
            emitted += 1
        if emitted:
            del buf[: start - state.offset]
            state.offset = start
            state.lines += emitted
            state.path = tracker.path

    def _finish_gzip(self, tracker: _Tracker, out: list[Line]) -> None:
        kind, error = tracker.end_kind, tracker.end_error
        state = tracker.state
        if tracker.skipping:
            end = tracker.read_pos
            tracker.skipping = False
            out.append(
                self._emit(
                    tracker,
                    tracker.skip_start,
                    end,
                    tracker.skip_keep,
                    LineKind.TOO_LONG,
                    length=end - tracker.skip_start,
                )
            )
        if kind is not None:
            end = state.offset + len(tracker.buf)
            sample = bytes(tracker.buf[: self.keep_bytes]) or tracker.end_sample
            out.append(
                self._emit(
                    tracker, state.offset, end, sample, kind, error=error, length=len(tracker.buf)
                )
            )
        elif tracker.buf:
            end = state.offset + len(tracker.buf)
            out.append(self._emit(tracker, state.offset, end, bytes(tracker.buf), LineKind.LINE))
        tracker.buf.clear()
        state.complete = True

    def _emit(
        self,
        tracker: _Tracker,
        start: int,
        end: int,
        data: bytes,
        kind: LineKind,
        *,
        error: str | None = None,
        length: int | None = None,
    ) -> Line:
        state = tracker.state
        state.offset = end
        state.lines += 1
        state.path = tracker.path
        return Line(
            tracker.spec.name,
            state,
            start,
            end,
            data,
            kind,
            error,
            tracker.header,
            len(data) if length is None else length,
        )

    def line_reader(self, line: Line, *, chunk_bytes: int = 8 << 20) -> LineReader:
        """The whole content of a line handed out by the last :meth:`read` (a ``too_long``
        one is handed out with its first ``keep_bytes`` only), read again from its file
        in chunks of at most ``chunk_bytes``, without its newline.

        Call it before the next :meth:`scan`, while the file's state is uncommitted (its
        file stays open until then). Raises :class:`TailingError` when the file was
        closed meanwhile (truncated or unreadable: the bytes are gone). A ``.gz`` file is
        decompressed again from its start.
        """
        key = self._held.get(line.state.fingerprint)
        tracker = self._trackers.get(key) if key is not None else None
        if tracker is None or tracker.state is not line.state:
            raise TailingError(
                f"{line.state.path} is no longer open (truncated or unreadable since the line "
                f"at offset {line.offset} was read): its bytes cannot be read again"
            )
        fd = os.dup(tracker.fd)  # ours to close, whatever the tracker does next
        ranged = _gzip_range if tracker.gzip else _plain_range
        return LineReader(fd, ranged(fd, line.offset, line.length, chunk_bytes))

    def _check_prefix(self, tracker: _Tracker, size: int) -> None:
        """A file rewritten between two scans (truncated, then grown past our offset) has
        another prefix: it is a new file, read from its start."""
        state = tracker.state
        try:
            prefix = os.pread(tracker.fd, state.fingerprint_len, 0)
        except OSError:
            return
        if len(prefix) < state.fingerprint_len or prefix_hash(prefix) != state.base:
            self._truncated(tracker, size)

    def _truncated(self, tracker: _Tracker, size: int) -> None:
        _log.warning("file_truncated", path=tracker.path, size=size, offset=tracker.state.offset)
        old = tracker.state
        key = tracker.key
        self._close(tracker)
        self._truncated_from[key] = old

    # -- closing -------------------------------------------------------------------------

    def _close_finished(self) -> None:
        now = time.monotonic()
        for tracker in list(self._trackers.values()):
            state = tracker.state
            if state.dirty:
                continue  # keep the file open until its progress is committed
            if tracker.gzip and state.complete:
                self._park(tracker)
                continue
            idle = now - tracker.last_data
            if idle < (self.close_idle_s if tracker.seen else self.gone_idle_s):
                continue
            if not self._at_end(tracker):
                continue
            if self.tail_settle_s is not None and (tracker.buf or tracker.skipping):
                continue  # an unterminated last line waits for its settle time, not parked
            if tracker.seen:
                self._park(tracker)
                continue
            if tracker.buf:
                _log.warning("partial_line_left", path=tracker.path, bytes=len(tracker.buf))
            self._close(tracker)

    def _at_end(self, tracker: _Tracker) -> bool:
        if tracker.gzip:
            return tracker.at_eof
        with contextlib.suppress(OSError):
            return os.fstat(tracker.fd).st_size == tracker.read_pos
        return True

    def _park(self, tracker: _Tracker) -> None:
        try:
            st = os.fstat(tracker.fd)
        except OSError:
            self._close(tracker)
            return
        self._close(tracker)
        self._parked[tracker.key] = (st.st_size, st.st_mtime_ns)
        self._parked_fingerprint[tracker.key] = tracker.state.fingerprint
        self._park_until.pop(tracker.key, None)

    def _close(self, tracker: _Tracker) -> None:
        self._trackers.pop(tracker.key, None)
        if self._held.get(tracker.state.fingerprint) == tracker.key:
            del self._held[tracker.state.fingerprint]
        with contextlib.suppress(OSError):
            os.close(tracker.fd)

    def close(self) -> None:
        """Close every open file."""
        for tracker in list(self._trackers.values()):
            self._close(tracker)

    @property
    def open_files(self) -> int:
        return len(self._trackers)


def _first_lines(prefix: bytes, count: int) -> bytes | None:
    end = 0
    for _ in range(count):
        newline = prefix.find(b"\n", end)
        if newline < 0:
            return None
        end = newline + 1
    return prefix[: end - 1] if end else None


class LineReader:
    """The chunks of one line read again from its file (:meth:`FileTailer.line_reader`);
    ``close()`` (or the end of a ``with`` block) closes its own file descriptor."""

    def __init__(self, fd: int, chunks: Generator[bytes]) -> None:
        self._fd: int | None = fd
        self._chunks = chunks

    def __iter__(self) -> LineReader:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _plain_range(fd: int, start: int, length: int, chunk_bytes: int) -> Generator[bytes]:
    position, end = start, start + length
    while position < end:
        chunk = os.pread(fd, min(chunk_bytes, end - position), position)
        if not chunk:
            raise TailingError(f"the file ended at byte {position}, before the line's end")
        position += len(chunk)
        yield chunk


def _gzip_range(fd: int, start: int, length: int, chunk_bytes: int) -> Generator[bytes]:
    """Bytes ``[start, start + length)`` of the decompressed content (members concatenated)."""
    raw_pos = 0
    position = 0  # in the decompressed content
    end = start + length
    inflater = zlib.decompressobj(wbits=31)
    pending = b""
    while position < end:
        if not pending:
            pending = os.pread(fd, _READ_CHUNK, raw_pos)
            raw_pos += len(pending)
            if not pending:
                break
        try:
            out = inflater.decompress(pending, chunk_bytes)
        except zlib.error as exc:
            raise TailingError(f"corrupt gzip data at byte {raw_pos}: {exc}") from None
        pending = inflater.unconsumed_tail
        if inflater.eof:
            rest = inflater.unused_data
            inflater = zlib.decompressobj(wbits=31)
            pending = rest if rest.startswith(_GZIP_MAGIC) else b""
            if rest and not pending:
                break  # trailing garbage: the tailer ignored it too
        piece_start, piece_end = max(start, position), min(end, position + len(out))
        if piece_end > piece_start:
            yield out[piece_start - position : piece_end - position]
        position += len(out)
    if position < start + length:
        raise TailingError(f"the gzip content ended at byte {position}, before the line's end")
