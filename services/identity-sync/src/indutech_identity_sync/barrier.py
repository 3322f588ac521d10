"""The write barrier: the reconciler's writes sent to a side's parallel writers, and their
outcomes applied in the order they were planned.

The reconciler plans in one thread and submits only writes that cannot depend on each
other; with one writer (or in a dry run) each write is made at once and its outcome
applied at once. With a pool (several writers of one side, one connection each) the
writes run concurrently and ``flush`` is the barrier: it waits for every write in flight
and applies the outcomes in submission order, so the anchors, the retry queue, the audit
records and the deletion guard are those of one writer whatever order the DC answered in.
A connection error in any write is raised once every other outcome is applied (the cycle
fails); after a failure ``close`` still accounts for the writes that reached a DC.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Mapping as MappingOf
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog

from indutech_identity_sync.config import Side
from indutech_identity_sync.directory import DirectoryWriter, WriterPool
from indutech_identity_sync.errors import DirectoryWriteError

Op = Literal["add", "modify", "move", "delete", "members"]
Then = Callable[[bool, Any], None]  # (written, the writer's result) -> apply it to the plan


@dataclass(frozen=True)
class Write:
    """One planned write: where, what, and what to do with its outcome."""

    side: Side
    op: Op
    dn: str
    then: Then
    key: str  # the object (or pair) a refusal quarantines
    guid: str = ""
    attributes: list[str] | None = None


class Outcomes(Protocol):
    """What the reconciler does with a write's outcome (the barrier only orders them)."""

    def applied(self, write: Write, result: object) -> None:
        """The write reached the DC: count and audit it."""

    def refused(self, write: Write, error: DirectoryWriteError) -> None:
        """The DC refused it: quarantine ``write.key``."""

    def invalid(self, write: Write, error: ValueError) -> None:
        """It could not be sent or applied (e.g. a DN that does not parse): quarantine."""


@dataclass
class _InFlight:
    write: Write
    future: Future[Any]


class WriteBarrier:
    """Sends the writes of one cycle and applies their outcomes in planned order."""

    def __init__(
        self,
        writers: MappingOf[Side, DirectoryWriter],
        outcomes: Outcomes,
        *,
        pools: MappingOf[Side, Sequence[DirectoryWriter]] | None = None,
    ) -> None:
        self.writers = writers
        self.outcomes = outcomes
        # a pool only where it has more than one writer: one writer writes at once
        self._pool_writers = {
            side: list(members) for side, members in (pools or {}).items() if len(members) > 1
        }
        self.pools: dict[Side, WriterPool] = {}
        self._in_flight: list[_InFlight] = []
        self.creating: set[tuple[Side, str]] = set()  # targets of the creates in flight
        self.log = structlog.get_logger("identity-sync")

    def open(self) -> None:
        """Start the pools' threads (once a cycle)."""
        self.pools = {side: WriterPool(members) for side, members in self._pool_writers.items()}

    def close(self) -> None:
        """End of the cycle, or its failure: wait for the writes in flight (those not started
        are dropped) and account for every one that reached its DC."""
        for pool in self.pools.values():
            pool.close()
        self.pools = {}
        self._account_in_flight()

    def submit(self, write: Write, call: Callable[[DirectoryWriter], object]) -> None:
        """Send ``write``: at once with one writer, else to the pool until the next ``flush``."""
        pool = self.pools.get(write.side)
        if pool is None:
            try:
                result = call(self.writers[write.side])
            except DirectoryWriteError as exc:
                self.outcomes.refused(write, exc)
                self._apply(write, False, None)
                return
            self.outcomes.applied(write, result)
            self._apply(write, True, result)
            return
        self._in_flight.append(_InFlight(write, pool.submit(call)))

    def flush(self) -> None:
        """The barrier: wait for the writes in flight and apply them in the order planned.
        A connection error is raised once every other write is applied (the cycle fails)."""
        in_flight, self._in_flight = self._in_flight, []
        self.creating.clear()
        error: BaseException | None = None
        for item in in_flight:
            write = item.write
            try:
                result = item.future.result()
            except DirectoryWriteError as exc:
                self.outcomes.refused(write, exc)
                done, result = False, None
            except ValueError as exc:  # data the writer could not send: this object only
                self.outcomes.invalid(write, exc)
                done, result = False, None
            except Exception as exc:  # re-raised below, once the rest is applied
                error = error or exc
                continue
            else:
                done = True
                self.outcomes.applied(write, result)
            try:
                self._apply(write, done, result)
            except Exception as exc:  # re-raised below: every written result is audited first
                error = error or exc
        if error is not None:
            raise error

    def _apply(self, write: Write, done: bool, result: Any) -> None:
        """Apply an outcome to the plan; data that cannot be applied quarantines its object."""
        try:
            write.then(done, result)
        except ValueError as exc:  # e.g. a DN that does not parse
            self.outcomes.invalid(write, exc)

    def _account_in_flight(self) -> None:
        """After a failure: the writes that finished in the pool reached their DC, so they are
        audited and counted like any other (their outcome is applied where it still can be)."""
        in_flight, self._in_flight = self._in_flight, []
        for item in in_flight:
            future = item.future
            if not future.done() or future.cancelled() or future.exception() is not None:
                continue
            result = future.result()
            self.outcomes.applied(item.write, result)
            try:
                item.write.then(True, result)
            except Exception:  # the cycle is failing already; the next one is full
                self.log.debug(
                    "identity_outcome_not_applied", side=item.write.side, dn=item.write.dn
                )
