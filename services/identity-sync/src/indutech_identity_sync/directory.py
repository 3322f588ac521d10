"""The write surface of one directory, as the reconciler uses it (LDAP, a fake, or a dry run),
and the pool of writers that lets the reconciler write to one side on several connections."""

from __future__ import annotations

import itertools
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

import structlog

from indutech_identity_sync.config import Kind, Side
from indutech_identity_sync.model import Values

T = TypeVar("T")


class DirectoryWriter(Protocol):
    """Synchronous writes to one side; every method raises DirectoryWriteError on refusal."""

    def add(self, kind: Kind, dn: str, attributes: dict[str, Values]) -> str:
        """Create the object and return its objectGUID."""

    def modify(self, dn: str, replace: dict[str, Values]) -> None:
        """Replace attribute values (an empty tuple clears the attribute)."""

    def move(self, dn: str, new_rdn: str, new_parent: str) -> str:
        """Rename and/or move; return the new DN."""

    def delete(self, dn: str) -> None: ...

    def modify_members(self, group_dn: str, add: list[str], remove: list[str]) -> None: ...


class DryRunWriter:
    """Prints the planned change instead of writing it (``--dry-run``)."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.planned: list[tuple[str, str, object]] = []
        self._ids = itertools.count(1)
        self._log = structlog.get_logger("identity-sync")

    def _plan(self, op: str, dn: str, detail: object) -> None:
        self.planned.append((op, dn, detail))
        self._log.info("planned_change", side=self.side, op=op, dn=dn, detail=detail)

    def add(self, kind: Kind, dn: str, attributes: dict[str, Values]) -> str:
        self._plan("add", dn, {"kind": kind, "attributes": sorted(attributes)})
        return f"dry-run-{self.side}-{next(self._ids)}"

    def modify(self, dn: str, replace: dict[str, Values]) -> None:
        self._plan("modify", dn, sorted(replace))

    def move(self, dn: str, new_rdn: str, new_parent: str) -> str:
        self._plan("move", dn, {"new_rdn": new_rdn, "new_parent": new_parent})
        return f"{new_rdn},{new_parent}"

    def delete(self, dn: str) -> None:
        self._plan("delete", dn, None)

    def modify_members(self, group_dn: str, add: list[str], remove: list[str]) -> None:
        self._plan("members", group_dn, {"add": len(add), "remove": len(remove)})


class WriterPool:
    """Several writers of one side (one connection each), each used by one thread at a time.

    ``submit`` runs a call on whichever writer is free; there are as many threads as
    writers, so a call never waits for a writer, only for a thread. The reconciler
    decides what may run concurrently (writes that do not depend on each other) and
    collects the results in its own thread, in the order it submitted them.
    """

    def __init__(self, writers: Sequence[DirectoryWriter]) -> None:
        if not writers:
            raise ValueError("a writer pool needs at least one writer")
        self.size = len(writers)
        self._free: queue.SimpleQueue[DirectoryWriter] = queue.SimpleQueue()
        for writer in writers:
            self._free.put(writer)
        self._executor = ThreadPoolExecutor(
            max_workers=self.size, thread_name_prefix="identity-sync-writer"
        )

    def submit(self, call: Callable[[DirectoryWriter], T]) -> Future[T]:
        return self._executor.submit(self._run, call)

    def _run(self, call: Callable[[DirectoryWriter], T]) -> T:
        writer = self._free.get()
        try:
            return call(writer)
        finally:
            self._free.put(writer)

    def close(self) -> None:
        """Wait for the writes in flight; the ones not started yet are cancelled."""
        self._executor.shutdown(wait=True, cancel_futures=True)
