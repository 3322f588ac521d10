"""The persistent anchor state: objectGUID pairs, last-synced values, change cookies.

It lives in S3 (SSE enforced by the common client), never in a file on the pod: a
snapshot object (the whole state) and, after it, a journal of small entries, one per
incremental cycle, holding only the pairs that cycle merged, created or removed, and
the cookies and delete bookkeeping (small, written whole). A full cycle writes a new
snapshot, which starts a new journal. So an incremental cycle's save costs what the
cycle touched, not the size of the directory, and a save still completes before the
cycle is done: what ``load`` returns is the state of the last cycle whose save
returned, exactly as with one object written whole.

The state is the merge base of the three-way comparison, which is what makes the sync
loop-free: a value equal on both sides is never written, whoever changed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Collection
from typing import Protocol, TypeVar

import structlog
from pydantic import BaseModel, Field, ValidationError

from indutech_identity_sync.config import Kind, Side
from indutech_identity_sync.errors import StateError

ROOT = "ROOT"
ModelT = TypeVar("ModelT", bound=BaseModel)
STATE_VERSION = 2  # what a snapshot is written as (see SyncState.version)


class PairState(BaseModel):
    """One synced object: its GUID on each side and the values last seen equal on both."""

    onprem_guid: str
    aws_guid: str
    kind: Kind
    parent: str = ROOT  # pair id of the parent OU, or ROOT (the scope root)
    rdn: str = ""  # unescaped RDN value
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    members: list[str] = Field(default_factory=list)  # pair ids


class CookieState(BaseModel):
    """Where change detection resumes on one side, and which DC issued it."""

    dc: str = ""
    dirsync_cookie_hex: str = ""
    highest_usn: int = 0


class SyncState(BaseModel):
    """Everything that survives a restart."""

    # 1: one object written whole (before 2026-12-05); 2: a snapshot naming its journal.
    # A version 1 object loads as a snapshot without a journal.
    version: int = STATE_VERSION
    # the journal that follows this snapshot ("": none); a writer of version 1 drops the
    # field, so a journal written before such a writer ran is never applied to its snapshot
    journal: str = ""
    pairs: dict[str, PairState] = Field(default_factory=dict)  # pair id -> pair
    onprem: CookieState = CookieState()
    aws: CookieState = CookieState()
    # deletes applied per side as [epoch seconds of the cycle, count], within the deletion
    # guard's rolling window (older ones are dropped): the window survives a restart
    deletes: dict[Side, list[tuple[float, int]]] = Field(default_factory=dict)
    # deletes not written yet per side: pair id -> epoch seconds the delete was first seen
    # (its settle time runs from there, across restarts)
    pending_deletes: dict[Side, dict[str, float]] = Field(default_factory=dict)


class JournalEntry(BaseModel):
    """What one incremental cycle changed: its pairs (written whole, or removed), and the
    small parts of the state written whole every time (cookies, delete bookkeeping)."""

    seq: int  # 1, 2, ... within its journal; load applies them in order, without gaps
    pairs: dict[str, PairState] = Field(default_factory=dict)  # merged or created
    removed: list[str] = Field(default_factory=list)  # pair ids no longer synced
    onprem: CookieState
    aws: CookieState
    deletes: dict[Side, list[tuple[float, int]]] = Field(default_factory=dict)
    pending_deletes: dict[Side, dict[str, float]] = Field(default_factory=dict)

    @classmethod
    def of(cls, seq: int, state: SyncState, changed: Collection[str]) -> JournalEntry:
        pairs = {pid: state.pairs[pid] for pid in changed if pid in state.pairs}
        return cls(
            seq=seq,
            pairs=pairs,
            removed=sorted(pid for pid in changed if pid not in state.pairs),
            onprem=state.onprem,
            aws=state.aws,
            deletes=state.deletes,
            pending_deletes=state.pending_deletes,
        )

    def apply(self, state: SyncState) -> None:
        state.pairs.update(self.pairs)
        for pid in self.removed:
            state.pairs.pop(pid, None)
        state.onprem, state.aws = self.onprem, self.aws
        state.deletes, state.pending_deletes = self.deletes, self.pending_deletes


class StateStore(Protocol):
    async def load(self) -> SyncState: ...

    async def close(self) -> None: ...

    async def save(self, state: SyncState, changed: Collection[str] | None = None) -> None:
        """Make ``state`` what the next ``load`` returns. ``changed``: the only pair ids that
        may differ from the last save (merged, created or removed since); None: any."""
        ...


class StateObjects(Protocol):
    """Where the state's objects live: ``JsonObjectStore`` (S3), or ``MemoryObjects``."""

    def url(self, key: str) -> str: ...

    async def get_bytes(self, key: str) -> bytes | None: ...

    async def put(
        self, key: str, document: BaseModel | bytes, *, create_only: bool = False
    ) -> bool: ...

    async def delete(self, key: str) -> None: ...

    async def list_keys(self, prefix: str) -> list[str]: ...


# Entries before a new snapshot: start-up reads at most this many small objects after the
# snapshot. A full cycle (start-up, then every reconcile_interval_s) writes one anyway.
JOURNAL_MAX_ENTRIES = 200


class S3StateStore:
    """The state as a snapshot object plus its journal (see the module's docstring), through
    the common ``JsonObjectStore`` (every PUT atomic, its SHA-256 checked by the server).
    A missing snapshot is a first start.

    Keys: the snapshot at ``key``; the entries of journal J at ``{key}.journal/J/{seq}.json``.
    A new snapshot names a new journal, so the entries of the one before are never applied
    to it (they are deleted in the background, and any left over by a crash are deleted
    after the next snapshot)."""

    def __init__(
        self,
        objects: StateObjects,
        *,
        key: str,
        journal_max_entries: int = JOURNAL_MAX_ENTRIES,
    ) -> None:
        self.objects = objects
        self.key = key
        self.journal_max_entries = journal_max_entries
        self.journal = ""  # the journal this process appends to ("": the next save snapshots)
        self.seq = 0  # entries written to it
        self.named = ""  # the journal of the last snapshot written (entries of others go)
        self.snapshots = 0  # saves that wrote the whole state (for the tests and the logs)
        self.entries = 0  # saves that appended a journal entry
        self._cleanup: asyncio.Task[None] | None = None
        self.log = structlog.get_logger("identity-sync")

    def _entry_key(self, journal: str, seq: int) -> str:
        return f"{self._journal_prefix(journal)}{seq:08d}.json"

    def _journal_prefix(self, journal: str = "") -> str:
        return f"{self.key}.journal/{journal}/" if journal else f"{self.key}.journal/"

    async def load(self) -> SyncState:
        state = await self._read(self.key, SyncState, what="an identity-sync state")
        if state is None:
            return SyncState()
        if state.journal:
            await self._replay(state)
        # the next save writes a snapshot and starts a journal of this process's own
        self.journal, self.seq = "", 0
        return state

    async def _replay(self, state: SyncState) -> None:
        """Apply the snapshot's journal in order; stop at a gap (an entry missing: what
        follows it cannot be applied), which leaves an older state that the next full cycle
        repairs as after a crash (objects found at their DN are adopted)."""
        prefix = self._journal_prefix(state.journal)
        keys = await self._list(prefix)
        expected = 1
        for key in sorted(keys):
            if key != self._entry_key(state.journal, expected):
                self.log.warning(
                    "state_journal_gap",
                    journal=self.objects.url(prefix),
                    expected=self._entry_key(state.journal, expected),
                    found=key,
                    action="the entries from here on are not applied; the full cycle at start "
                    "repairs the state (objects found at their DN are adopted)",
                )
                return
            entry = await self._read(
                key,
                JournalEntry,
                what="an identity-sync state journal entry",
                fix="delete it and the entries after it (the state goes back to the cycle "
                "before it, and the full cycle at start repairs the rest)",
            )
            if entry is None:  # deleted since the listing: the same as a gap
                return
            entry.apply(state)
            expected += 1

    async def _read(
        self,
        key: str,
        model: type[ModelT],
        *,
        what: str,
        fix: str = "restore its previous version, or fix it",
    ) -> ModelT | None:
        url = self.objects.url(key)
        try:
            data = await self.objects.get_bytes(key)
        except Exception as exc:
            raise StateError(
                f"cannot read {url}: {exc}; check the S3 settings and that the worker's role "
                "may read it (the worker does not start without its state)"
            ) from exc
        if data is None:
            return None
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            raise StateError(
                f"{url} is not {what}: {exc}; check what wrote it, then {fix} (the worker "
                "does not start without its state)"
            ) from exc

    async def _list(self, prefix: str) -> list[str]:
        try:
            return await self.objects.list_keys(prefix)
        except Exception as exc:
            raise StateError(
                f"cannot list {self.objects.url(prefix)}: {exc}; check the S3 settings and "
                "that the worker's role may list the bucket"
            ) from exc

    async def save(self, state: SyncState, changed: Collection[str] | None = None) -> None:
        try:
            if changed is not None and self._fits_journal(state, changed):
                await self._append(state, changed)
            else:
                await self._snapshot(state)
        except Exception as exc:
            # the answer may be lost while the object landed: start afresh with a snapshot
            self.journal, self.seq = "", 0
            raise StateError(
                f"cannot write the state under {self.objects.url(self.key)}: {exc}; the "
                "cycle's writes were made, the next cycle saves the whole state again"
            ) from exc

    def _fits_journal(self, state: SyncState, changed: Collection[str]) -> bool:
        """An entry, unless no journal is open here yet, this one is full, or the entry
        would be about as large as the state itself."""
        return (
            bool(self.journal)
            and self.seq < self.journal_max_entries
            and 2 * len(changed) <= len(state.pairs)
        )

    async def _snapshot(self, state: SyncState) -> None:
        previous = state.journal
        state.version, state.journal = STATE_VERSION, uuid.uuid4().hex
        try:
            await self.objects.put(self.key, state)
        except BaseException:
            state.journal = previous
            raise
        self.journal, self.seq = state.journal, 0
        self.named = state.journal
        self.snapshots += 1
        if self._cleanup is None or self._cleanup.done():
            self._cleanup = asyncio.create_task(self._drop_old_journals())

    async def _append(self, state: SyncState, changed: Collection[str]) -> None:
        seq = self.seq + 1
        key = self._entry_key(self.journal, seq)
        if not await self.objects.put(key, JournalEntry.of(seq, state, changed), create_only=True):
            raise StateError(
                f"{self.objects.url(key)} exists already: another identity-sync worker writes "
                "this state; run one replica per state key"
            )
        self.seq = seq
        self.entries += 1

    async def _drop_old_journals(self) -> None:
        """Delete the entries of every journal but the one of the last snapshot written:
        no snapshot names them any more (a snapshot whose PUT failed gets no entries, so
        nothing newer exists). Off the cycles' path, again if a snapshot was written
        meanwhile; what is left (a stop, an S3 error) goes after the next snapshot."""
        done = ""
        try:
            while self.named != done:
                done = self.named
                for key in await self.objects.list_keys(self._journal_prefix()):
                    # read at each key: a snapshot written meanwhile names a newer journal
                    if not key.startswith(self._journal_prefix(self.named)):
                        await self.objects.delete(key)
        except Exception as exc:  # garbage only: never a reason to fail a cycle
            self.log.warning("state_journal_cleanup_failed", error=str(exc))

    async def flush(self) -> None:
        """Wait for the background deletion of old journal entries, if one runs."""
        if self._cleanup is not None:
            await self._cleanup

    async def close(self) -> None:
        """Stop the background deletion of old journal entries (the next snapshot resumes it)."""
        task, self._cleanup = self._cleanup, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class MemoryObjects:
    """``StateObjects`` in a dict (unit tests, dry runs and the in-memory store)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.puts: list[str] = []  # keys in the order they were written

    def url(self, key: str) -> str:
        return f"memory://{key}"

    async def get_bytes(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def put(
        self, key: str, document: BaseModel | bytes, *, create_only: bool = False
    ) -> bool:
        if create_only and key in self.data:
            return False
        data = document if isinstance(document, bytes) else document.model_dump_json().encode()
        self.data[key] = data
        self.puts.append(key)
        return True

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.data if k.startswith(prefix))


class MemoryStateStore(S3StateStore):
    """The same snapshot and journal, kept in memory (unit tests and dry runs)."""

    def __init__(self, state: SyncState | None = None) -> None:
        self.memory = MemoryObjects()
        super().__init__(self.memory, key="state.json")
        self.saves = 0
        if state is not None:
            self.memory.data[self.key] = state.model_dump_json().encode()

    async def save(self, state: SyncState, changed: Collection[str] | None = None) -> None:
        await super().save(state, changed)
        self.saves += 1
