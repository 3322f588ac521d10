"""Objects that cannot be applied wait here, each with its reason and its backoff; the rest go on.

An object lands here when the other side refused its write, when its name collides with
another object's (two source names AD folds to one, or a target name already taken), or
when its data cannot be read (a DN that does not parse). The reconciler logs it once
(``identity_object_quarantined``), audits it (op ``quarantine``) and the worker counts it;
then every write of that object waits ``initial_s`` (doubling per failed try, at most
``maximum_s``) and only then is it tried again. A change reported for it (the change watch, a
notification) makes it due at once: a rename that fixes the name is picked up without waiting. An
object that goes through on a later try is released (``identity_object_released``).

Kept in memory: after a restart each object is tried once more, and quarantined (and logged)
again if it still fails. Pure logic with an injectable clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from indutech_identity_sync.config import Side

Cause = Literal["refused", "collision", "invalid"]


@dataclass
class Held:
    """One quarantined object (or pair: keyed by its pair id, the on-prem objectGUID)."""

    key: str
    side: Side  # the side it cannot be applied to (or read from, for a DN that does not parse)
    dn: str  # the object's DN on its own side: what an operator looks up or renames
    source: Side  # its own side
    object_guid: str  # its objectGUID there
    cause: Cause
    reason: str  # names the DNs concerned and what the DC said
    target_dn: str = ""  # the DN written on ``side``, when there is one
    other_dn: str = ""  # a collision: the object that keeps the name
    guids: frozenset[str] = frozenset()  # every objectGUID of the object or pair
    attempts: int = 1
    since: float = 0.0
    retry_at: float = 0.0


@dataclass
class Quarantine:
    initial_s: float = 30.0
    maximum_s: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    held: dict[str, Held] = field(default_factory=dict)

    def hold(self, entry: Held) -> bool:
        """Quarantine ``entry`` (again); True when it is new or its reason changed (log it)."""
        now = self.clock()
        before = self.held.get(entry.key)
        if before is not None:
            entry.attempts = before.attempts + 1
            entry.since = before.since
            entry.guids = entry.guids | before.guids
        else:
            entry.since = now
        delay = min(self.initial_s * 2.0 ** (entry.attempts - 1), max(self.maximum_s, 0.0))
        entry.retry_at = now + delay
        self.held[entry.key] = entry
        return before is None or before.reason != entry.reason

    def waiting(self, key: str) -> bool:
        """True while ``key`` is held and its backoff has not run out."""
        entry = self.held.get(key)
        return entry is not None and entry.retry_at > self.clock()

    def holds(self, guid: str) -> bool:
        """True while an object or pair with this objectGUID waits its backoff."""
        return any(guid in e.guids and e.retry_at > self.clock() for e in self.held.values())

    def release(self, key: str) -> Held | None:
        return self.held.pop(key, None)

    def wake(self, guids: Iterable[str]) -> None:
        """A change was reported for these objects: try them at the next cycle."""
        wanted = set(guids)
        now = self.clock()
        for entry in self.held.values():
            if entry.guids & wanted:
                entry.retry_at = min(entry.retry_at, now)

    def due(self) -> list[Held]:
        """The entries whose backoff has run out (to bring into the next cycle)."""
        now = self.clock()
        return [e for e in self.held.values() if e.retry_at <= now]

    def retry_in(self, key: str) -> float:
        entry = self.held.get(key)
        return 0.0 if entry is None else max(0.0, entry.retry_at - self.clock())

    def count(self, side: Side) -> int:
        return sum(e.side == side for e in self.held.values())

    def forget(self, present: Callable[[str], bool]) -> None:
        """Drop the entries none of whose objects exists any more (deleted at the source)."""
        for key in [k for k, e in self.held.items() if not any(map(present, e.guids))]:
            del self.held[key]
