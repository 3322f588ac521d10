"""The deletion guard: the deletes to a side are judged together, across cycles, before any
of them is written.

A directory deletes one entry at a time, so a mass delete on one side reaches the other as
a trickle of change batches, each under any per-cycle limit. So a planned delete (a pair
with one side gone) is not written by the cycle that first sees it: it waits ``settle_s``
(the first-seen times are kept in the state, so a restart does not restart the wait), and
every cycle counts every delete pending for a side, settling or due, against the limits:

- rule ``pending``: the deletes pending together against ``max_count`` and ``max_percent``
  (of the side's objects, once it holds ``min_objects_for_percent``);
- rule ``window``: those plus the deletes applied to the side over the last ``window_s``
  against ``window_max_count`` / ``window_max_percent`` (a trickle slower than the settle
  time).

Passing a limit holds every delete to that side, however long it waited, until an operator
runs once with ``--allow-mass-delete``, raises the limits, or (rule ``window``) older deletes
leave the window. Every other change (creates, attribute writes such as a disable, moves)
still goes out at once. The trip is logged once (``deletion_guard_tripped``), then every
``reminder_s`` (``deletion_guard_still_tripped``), not every cycle, and its end too
(``deletion_guard_cleared``). The worker keeps one guard across cycles; the reconciler
makes its own when given none (one cycle, as in the unit tests).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from indutech_identity_sync.config import DeletionGuard, Side
from indutech_identity_sync.state import SyncState

GuardRule = Literal["pending", "window"]


@dataclass(frozen=True)
class Verdict:
    """What the guard decided for one side this cycle."""

    due: tuple[str, ...]  # pair ids whose delete is written now
    pending: int  # deletes of the side not written yet, settling or due
    settling: int  # of them, still within the settle time
    in_window: int  # deletes applied to the side within the rolling window
    rule: GuardRule | None = None  # set: a limit is passed and every delete is held

    @property
    def tripped(self) -> bool:
        return self.rule is not None


@dataclass
class _Trip:
    since: float  # epoch seconds of the trip
    logged: float  # epoch seconds of the last log line about it


class DeleteGuard:
    """Judges the deletes of each side with the mapping's ``[deletion_guard]`` limits."""

    def __init__(self, limits: DeletionGuard) -> None:
        self.limits = limits
        self.trips: dict[Side, _Trip] = {}
        self.judged_at: float | None = None
        self.log = structlog.get_logger("identity-sync")

    def judge(
        self,
        state: SyncState,
        side: Side,
        planned: Sequence[str],
        *,
        objects: int,
        now: float,
        allow_mass_delete: bool = False,
        held: bool = False,
        dry_run: bool = False,
    ) -> Verdict:
        """The deletes of ``side`` to write this cycle, out of ``planned`` (every pair whose
        ``side`` object is the one left). ``held``: the deletes of the side wait for another
        reason (a DC change); they are recorded as pending but not judged or written.
        ``dry_run``: the plan shows the deletes that go out once settled (none wait)."""
        self.judged_at = now
        settle = self.limits.settle_s
        seen = state.pending_deletes.get(side, {})
        pending = {pid: seen.get(pid, now) for pid in planned}  # what is gone is forgotten
        if pending:
            state.pending_deletes[side] = pending
        else:
            state.pending_deletes.pop(side, None)
        settling = sum(1 for first in pending.values() if now - first < settle)
        in_window = self._window(state, side, now)
        if held:
            return Verdict((), len(pending), settling, in_window)
        if allow_mass_delete:  # an operator checked them: no limit, no settle time
            self._cleared(side, now, reason="--allow-mass-delete")
            return Verdict(tuple(pending), len(pending), settling, in_window)
        rule = self._rule(len(pending), in_window, objects)
        if rule is not None:
            self._tripped(
                side,
                rule,
                now,
                pending=len(pending),
                settling=settling,
                in_window=in_window,
                objects=objects,
            )
            return Verdict((), len(pending), settling, in_window, rule)
        self._cleared(side, now, reason="the deletes pending are within the limits")
        due = tuple(pid for pid, first in pending.items() if dry_run or now - first >= settle)
        return Verdict(due, len(pending), settling, in_window)

    def record(
        self,
        state: SyncState,
        side: Side,
        written: Collection[str],
        *,
        now: float,
        allow_mass_delete: bool = False,
    ) -> int:
        """Count the deletes written this cycle in the rolling window (also those written
        before a cycle failed) and return the deletes now in it. After --allow-mass-delete
        the window starts afresh: the operator acknowledged what it held."""
        pending = state.pending_deletes.get(side)
        if pending is not None:
            for pid in written:
                pending.pop(pid, None)
            if not pending:
                state.pending_deletes.pop(side, None)
        if allow_mass_delete:
            state.deletes.pop(side, None)
            return 0
        if written:
            state.deletes.setdefault(side, []).append((now, len(written)))
        return sum(n for _, n in state.deletes.get(side, []))

    def due(self, state: SyncState, now: float) -> bool:
        """True when a cycle is needed although nothing changed: a pending delete finished
        its settle time since the last judgement, or a trip's reminder is due."""
        if any(now - trip.logged >= self.limits.reminder_s for trip in self.trips.values()):
            return True
        settle = self.limits.settle_s
        since = self.judged_at
        for side, pending in state.pending_deletes.items():
            if side in self.trips:
                continue  # held anyway: only the reminder brings a cycle
            for first in pending.values():
                ready = first + settle
                if ready <= now and (since is None or ready > since):
                    return True
        return False

    # -- the rules ---------------------------------------------------------------------------

    def _window(self, state: SyncState, side: Side, now: float) -> int:
        """Deletes applied to ``side`` within the rolling window (older entries dropped)."""
        start = now - self.limits.window_s
        kept = [(at, n) for at, n in state.deletes.get(side, []) if at > start]
        if kept:
            state.deletes[side] = kept
        else:
            state.deletes.pop(side, None)
        return sum(n for _, n in kept)

    def _rule(self, pending: int, in_window: int, objects: int) -> GuardRule | None:
        if not pending:
            return None
        limits = self.limits
        total = max(objects, 1)
        percent_applies = total >= limits.min_objects_for_percent
        if pending > limits.max_count or (
            percent_applies and 100.0 * pending / total > limits.max_percent
        ):
            return "pending"
        cumulative = in_window + pending
        if (limits.window_max_count is not None and cumulative > limits.window_max_count) or (
            percent_applies
            and limits.window_max_percent is not None
            and 100.0 * cumulative / total > limits.window_max_percent
        ):
            return "window"
        return None

    # -- the log -----------------------------------------------------------------------------

    def _tripped(
        self,
        side: Side,
        rule: GuardRule,
        now: float,
        *,
        pending: int,
        settling: int,
        in_window: int,
        objects: int,
    ) -> None:
        """Log a trip once, then a reminder every ``reminder_s`` while it lasts."""
        trip = self.trips.get(side)
        if trip is not None and now - trip.logged < self.limits.reminder_s:
            return
        limits = self.limits
        fields: dict[str, Any] = {
            "side": side,
            "rule": rule,
            "planned_deletes": pending,
            "settling": settling,
            "objects": objects,
            "percent": round(100.0 * pending / max(objects, 1), 1),
            "max_count": limits.max_count,
            "max_percent": limits.max_percent,
            "deleted_in_window": in_window,
            "window_s": limits.window_s,
            "window_max_count": limits.window_max_count,
            "window_max_percent": limits.window_max_percent,
            "settle_s": limits.settle_s,
            "action": _action(rule, in_window, limits),
        }
        if trip is None:
            self.trips[side] = _Trip(since=now, logged=now)
            self.log.error("deletion_guard_tripped", **fields)
            return
        trip.logged = now
        self.log.error(
            "deletion_guard_still_tripped", tripped_for_s=round(now - trip.since), **fields
        )

    def _cleared(self, side: Side, now: float, *, reason: str) -> None:
        trip = self.trips.pop(side, None)
        if trip is not None:
            self.log.warning(
                "deletion_guard_cleared",
                side=side,
                tripped_for_s=round(now - trip.since),
                reason=reason,
            )


def _action(rule: GuardRule, in_window: int, limits: DeletionGuard) -> str:
    held = "deletes to this side are held (every other change still goes out)"
    if rule == "pending":
        return (
            f"{held}: check the deletes on the other side; if intended, run once with "
            "--allow-mass-delete or raise deletion_guard.max_count / max_percent in the "
            "mapping file; if not, restore the objects there (their deletes are then dropped)"
        )
    return (
        f"{held}: {in_window} deletes were applied in the last {limits.window_s:.0f} s; check "
        "the deletes on the other side; if intended, run once with --allow-mass-delete (which "
        "also starts the window afresh), raise deletion_guard.window_max_count / "
        "window_max_percent in the mapping file, or wait: they go out once the window's older "
        "deletes leave it"
    )
