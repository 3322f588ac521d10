"""One reconcile cycle: a three-way merge of both directories against the stored state.

For every synced value the state holds the last value seen equal on both sides
(the merge base). A side that differs from the base changed; one changed side
is copied to the other; two changed sides that disagree are a conflict, won by
the attribute's configured authority. A value equal on both sides is never
written, so our own writes, read back on the next cycle, produce no writes:
the sync is loop-free by construction, and the write counters prove it.

Order: parents before children (a work list retried until no progress, the
retry queue of references not yet created), then attributes (DN references such
as ``manager`` once their targets exist), then memberships, then deletes
(children first) behind the deletion guard (``deletion_guard``: a delete waits a
settle time and is judged with every other pending one; only deletes are held, and
a member whose object waits for its delete stays in its groups until the delete is
written, as the delete itself removes it). A write that fails leaves the base
unchanged, so the next cycle retries it; an object created before a crash is
found again at its DN and adopted, so a restart never duplicates.

A cycle is full (every object of both mirrors: start-up and the schedule) or
focused on a change batch (``focus``: the GUIDs the change watch or a
notification reported, plus last cycle's retries): then only those objects and their pairs
are merged, references resolved through the GUID state, so its cost follows
the size of the batch, not of the directory. Deletes are planned over every
pair either way, so the deletion guard always sees the whole picture.

Parallel writers (``pools``: several writers of one side, one connection each):
the plan is still made in one thread, in the order above, and every decision
that depends on an earlier write waits for it. Writes that cannot depend on
each other are sent to the pool together and their results applied in the
order they were planned, at a barrier (``barrier.WriteBarrier``): the creates of one wave
(same depth below the root and same kind: a parent is one level up, so in an
earlier wave, and users come before the groups of their level), the attribute
writes of all pairs, the membership writes of all groups, the deletes of one
depth. A rename or move waits for what is in flight and is applied alone.
So parents are created before children, users before the groups that list them,
memberships after both, deletes children first, and what waits on a reference
not created yet goes to the retry queue exactly as with one writer.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Mapping as MappingOf
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import structlog

from indutech_common.schemas import ChangeRecord
from indutech_identity_sync.barrier import Op, Then, Write, WriteBarrier
from indutech_identity_sync.config import SIDES, AttributeRule, Kind, Mapping, Side, other
from indutech_identity_sync.deletion_guard import DeleteGuard
from indutech_identity_sync.directory import DirectoryWriter
from indutech_identity_sync.dn import canonical_dn
from indutech_identity_sync.errors import DirectoryWriteError
from indutech_identity_sync.mirror import Mirror
from indutech_identity_sync.model import (
    DirObject,
    Values,
    depth_below,
    make_dn,
    make_rdn,
    normalize_dn,
    split_rdn,
)
from indutech_identity_sync.quarantine import Cause, Held, Quarantine
from indutech_identity_sync.state import ROOT, PairState, SyncState

T = TypeVar("T")
UAC_ACCOUNTDISABLE = 0x2
UAC_NORMAL_ACCOUNT = 0x200
RDN_TYPE = {"ou": "OU", "user": "CN", "group": "CN"}
KIND_ORDER = {"ou": 0, "user": 1, "group": 2}
_MAX_PASSES = 50
_ACTIONS: dict[Cause, str] = {
    "refused": "fix what the DC refused (see reason) on either side; the object is tried "
    "again after its backoff, at once when it changes",
    "collision": "rename one of the two objects named in reason (AD compares names ignoring "
    "case and width, ß as ss); it is tried again after its backoff, at once when it changes",
    "invalid": "rename the object (its name cannot be read as a DN, see reason); it is tried "
    "again after its backoff, at once when it changes",
}

Location = tuple[str, str]  # (parent pair id or ROOT, RDN value)


@dataclass
class CycleReport:
    """What one cycle did (or, in a dry run, would do)."""

    writes: Counter[tuple[Side, str]] = field(default_factory=Counter)
    conflicts: int = 0
    failed: int = 0
    deferred: int = 0
    guard_tripped: dict[Side, int] = field(default_factory=dict)  # side -> pending deletes
    guard_rule: dict[Side, str] = field(default_factory=dict)  # side -> "pending" or "window"
    deletes_in_window: dict[Side, int] = field(default_factory=dict)  # applied, this included
    deletes_pending: dict[Side, int] = field(default_factory=dict)  # not written, this cycle's
    deletes_settling: dict[Side, int] = field(default_factory=dict)  # of them, still settling
    deletes_held: dict[Side, int] = field(default_factory=dict)  # waiting after a DC change
    objects: dict[Side, int] = field(default_factory=dict)
    changes: list[ChangeRecord] = field(default_factory=list)
    retry: dict[Side, set[str]] = field(default_factory=lambda: {s: set() for s in SIDES})
    full: bool = True  # False: a focused cycle over one change batch
    merged: int = 0  # pairs merged (all of them in a full cycle)
    quarantined: list[Held] = field(default_factory=list)  # newly held (logged, audited)
    released: list[Held] = field(default_factory=list)  # held before, went through this cycle
    # pair ids whose state this cycle may have changed (merged, created or removed): all a
    # focused cycle's state save has to write (state.JournalEntry); a full one saves it all
    pairs_changed: set[str] = field(default_factory=set)

    @property
    def total_writes(self) -> int:
        return sum(self.writes.values())


class Reconciler:
    """Runs one cycle over the two mirrors (or snapshots), writing through the two writers.

    ``snapshots`` are Mirrors kept by the caller between cycles (the reconciler
    keeps them current with its own writes) or plain lists of objects read from
    each side. ``focus`` limits the cycle to the pairs of those GUIDs per side.
    ``pools``: per side, several writers (one connection each) to write with
    concurrently where the order allows it; without them (or with one writer, or
    in a dry run) every write goes through ``writers`` one at a time. ``hold_deletes``: sides
    whose deletes wait this cycle (the other side just moved to another DC). ``clock``: wall
    time in seconds, for the deletion guard's settle time and rolling window (kept in the
    state). ``guard``: the deletion guard kept across cycles (by the worker: it logs a trip
    once, then reminders); without one the cycle has its own. ``quarantine``: objects that
    could not be applied, kept by the caller between cycles; what it holds waits its
    backoff, what fails this cycle joins it (logged once, audited), and every other object
    goes on.
    """

    def __init__(
        self,
        mapping: Mapping,
        state: SyncState,
        snapshots: MappingOf[Side, Mirror | Iterable[DirObject]],
        writers: MappingOf[Side, DirectoryWriter],
        *,
        focus: MappingOf[Side, set[str]] | None = None,
        allow_mass_delete: bool = False,
        dry_run: bool = False,
        pools: MappingOf[Side, Sequence[DirectoryWriter]] | None = None,
        hold_deletes: Iterable[Side] = (),
        clock: Callable[[], float] = time.time,
        guard: DeleteGuard | None = None,
        quarantine: Quarantine | None = None,
    ) -> None:
        self.dry_run = dry_run
        self.quarantine = quarantine if quarantine is not None else Quarantine()
        self._attempted: set[str] = set()  # held keys whose backoff ran out, tried this cycle
        self._held_now: set[str] = set()  # keys that failed (again) this cycle
        self.hold_deletes = frozenset(hold_deletes)
        self.now = clock()
        self.guard = guard or DeleteGuard(mapping.deletion_guard)
        self.deleted: dict[Side, list[str]] = {s: [] for s in SIDES}  # pair ids deleted
        self.vanishing: set[str] = set()  # pairs with one side gone (their delete pending)
        # the writes and the order their outcomes are applied in (a dry run: one at a time)
        self.barrier = WriteBarrier(writers, self, pools=None if dry_run else pools)
        self.mapping = mapping
        self.state = state
        self.sides: dict[Side, Mirror] = {}
        for side in SIDES:
            given = snapshots[side]
            self.sides[side] = given if isinstance(given, Mirror) else Mirror(side, mapping, given)
        self.writers = writers
        self.focus = focus
        self.dirty: set[str] = set()  # pair ids merged this cycle (focused cycles)
        self.allow_mass_delete = allow_mass_delete
        self.report = CycleReport(
            objects={s: len(self.sides[s].objects) for s in SIDES}, full=focus is None
        )
        self.log = structlog.get_logger("identity-sync")
        self.pair_of: dict[Side, dict[str, str]] = {s: {} for s in SIDES}
        self._reindex()

    # -- indexes -----------------------------------------------------------------------------

    def _reindex(self) -> None:
        """pair_of from the state, in one pass (once a cycle; kept current after that)."""
        onprem: dict[str, str] = {}
        aws: dict[str, str] = {}
        for pid, pair in self.state.pairs.items():
            onprem[pair.onprem_guid] = pid
            aws[pair.aws_guid] = pid
        self.pair_of = {"onprem": onprem, "aws": aws}

    def _unpair(self, pid: str) -> None:
        pair = self.state.pairs.pop(pid)
        self.report.pairs_changed.add(pid)
        self.pair_of["onprem"].pop(pair.onprem_guid, None)
        self.pair_of["aws"].pop(pair.aws_guid, None)

    def _present(self, pair: PairState, side: Side) -> DirObject | None:
        return self.sides[side].objects.get(guid_of(pair, side))

    def _location(self, side: Side, obj: DirObject) -> Location | None:
        """(parent pair id, RDN value), or None while the parent is not paired yet."""
        _, rdn, parent_dn = split_rdn(obj.dn)
        if normalize_dn(parent_dn) == self.sides[side].root_norm:
            return ROOT, rdn
        parent_guid = self.sides[side].guid_at(parent_dn)
        if parent_guid is None:
            return None
        parent_pid = self.pair_of[side].get(parent_guid)
        return None if parent_pid is None else (parent_pid, rdn)

    def _parent_dn(self, side: Side, parent: str) -> str | None:
        if parent == ROOT:
            return self.sides[side].root
        pair = self.state.pairs.get(parent)
        obj = None if pair is None else self._present(pair, side)
        return None if obj is None else obj.dn

    # -- the cycle ---------------------------------------------------------------------------

    def run(self) -> CycleReport:
        self.barrier.open()
        try:
            self._quarantine_unreadable()
            deletes = self._plan_deletes()
            self._structure()
            self._attributes()
            self._memberships()
            self._deletes(deletes)
            self._release_attempted()
        finally:
            # after a failure: waits for the writes in flight, drops the rest, and audits
            # those that reached a DC
            self.barrier.close()
            self._record_deletes()  # those applied before a failure count too
            # every pair a focused cycle can change is merged (``dirty``, created ones too)
            # or removed (``_unpair``)
            self.report.pairs_changed |= self.dirty
        return self.report

    # -- the barrier's outcomes (barrier.Outcomes) -------------------------------------------

    def refused(self, write: Write, error: DirectoryWriteError) -> None:
        self.report.failed += 1
        reason = f"{write.op} {write.dn!r} refused by the {write.side} DC: {error}"
        self._quarantine(write.key, write.side, "refused", reason, write.dn)

    def invalid(self, write: Write, error: ValueError) -> None:
        self._quarantine(write.key, write.side, "invalid", f"{write.dn!r}: {error}", write.dn)

    def applied(self, write: Write, result: object) -> None:
        side, op = write.side, write.op
        self.report.writes[side, op] += 1
        record = ChangeRecord(
            side=side,
            op=op,
            dn=write.dn,
            object_guid=write.guid or (result if op == "add" and isinstance(result, str) else ""),
            attributes=sorted(write.attributes or []),
            dry_run=self.dry_run,
        )
        self.report.changes.append(record)
        self.log.info(
            "identity_change_applied",
            side=side,
            op=op,
            dn=write.dn,
            object_guid=record.object_guid,
            attributes=record.attributes,
            event_id=record.event_id,
            dry_run=self.dry_run,
        )

    def _submit(
        self,
        side: Side,
        op: Op,
        dn: str,
        call: Callable[[DirectoryWriter], object],
        then: Then,
        *,
        guid: str = "",
        attributes: list[str] | None = None,
        key: str = "",
    ) -> None:
        """A write whose outcome ``then`` applies: at once with one writer, else at the next
        barrier (``self.barrier.flush``); the caller only submits writes independent of each
        other. ``key``: the quarantine key of the object (default: that of ``guid`` on
        ``side``); while it waits its backoff the write is not sent."""
        key = key or self._key(side, guid)
        if self._waits(key):
            then(False, None)
            return
        write = Write(side, op, dn, then, key, guid=guid, attributes=attributes)
        self.barrier.submit(write, call)

    # -- quarantine --------------------------------------------------------------------------

    def _key(self, side: Side, guid: str) -> str:
        """The quarantine key of an object: its pair id once paired, else its objectGUID."""
        return self.pair_of[side].get(guid, guid)

    def _waits(self, key: str) -> bool:
        """True while ``key`` is quarantined and its backoff runs; a key whose backoff ran out
        is tried (and released at the end of the cycle unless it fails again)."""
        if not key or key not in self.quarantine.held:
            return False
        if self.quarantine.waiting(key):
            return True
        self._attempted.add(key)
        return False

    def _source_of(self, key: str, side: Side) -> tuple[Side, DirObject] | None:
        """The object behind ``key``, preferably on the side other than ``side``."""
        pair = self.state.pairs.get(key)
        for look in (other(side), side):
            obj = (
                self._present(pair, look) if pair is not None else self.sides[look].objects.get(key)
            )
            if obj is not None:
                return look, obj
        return None

    def _quarantine(
        self,
        key: str,
        side: Side,
        cause: Cause,
        reason: str,
        target_dn: str = "",
        *,
        other_dn: str = "",
        found: tuple[Side, str, str] | None = None,
    ) -> None:
        """Hold the object ``key`` (it cannot be applied to ``side``): logged and audited the
        first time (or when the reason changes), then it waits its backoff."""
        if not key:
            return
        source = self._source_of(key, side)
        if found is not None:
            origin, guid, dn = found
        elif source is not None:
            origin, guid, dn = source[0], source[1].guid, source[1].dn
        else:
            origin, guid, dn = other(side), key, target_dn
        pair = self.state.pairs.get(key)
        guids = {key, guid} | ({pair.onprem_guid, pair.aws_guid} if pair is not None else set())
        entry = Held(
            key=key,
            side=side,
            dn=dn,
            source=origin,
            object_guid=guid,
            cause=cause,
            reason=reason,
            target_dn=target_dn,
            other_dn=other_dn,
            guids=frozenset(guids),
        )
        self._held_now.add(key)
        if not self.quarantine.hold(entry):
            self.log.debug(
                "identity_quarantine_retry_failed",
                side=side,
                dn=dn,
                attempts=entry.attempts,
                retry_in_s=round(self.quarantine.retry_in(key), 1),
            )
            return
        self.report.quarantined.append(entry)
        record = ChangeRecord(
            side=side,
            op="quarantine",
            dn=dn,
            object_guid=guid,
            reason=reason,
            dry_run=self.dry_run,
        )
        self.report.changes.append(record)
        self.log.warning(
            "identity_object_quarantined",
            side=side,
            dn=dn,
            source=origin,
            object_guid=guid,
            target_dn=target_dn,
            collides_with=other_dn,
            cause=cause,
            reason=reason,
            attempts=entry.attempts,
            retry_in_s=round(self.quarantine.retry_in(key), 1),
            event_id=record.event_id,
            action=_ACTIONS[cause],
        )

    def _quarantine_unreadable(self) -> None:
        """Objects whose DN does not parse were left out of the mirrors: hold them visibly."""
        for side in SIDES:
            for guid, (dn, reason) in self.sides[side].rejected.items():
                if not self._waits(guid):
                    self._quarantine(guid, side, "invalid", reason, found=(side, guid, dn))

    def _release_attempted(self) -> None:
        """Held objects tried this cycle that did not fail again are released; in a full cycle,
        entries whose objects are gone from both sides are dropped."""
        for key in sorted(self._attempted - self._held_now):
            entry = self.quarantine.release(key)
            if entry is not None:
                self.report.released.append(entry)
                self.log.info(
                    "identity_object_released",
                    side=entry.side,
                    dn=entry.dn,
                    object_guid=entry.object_guid,
                    attempts=entry.attempts,
                )
        if self.focus is None:
            mirrors = [self.sides[s] for s in SIDES]
            self.quarantine.forget(
                lambda guid: any(guid in m.objects or guid in m.rejected for m in mirrors)
            )

    # -- deletes -----------------------------------------------------------------------------

    def _plan_deletes(self) -> dict[Side, list[str]]:
        """Pairs with one side gone (a delete to write on the other), over every pair: one
        pass of set lookups, the only per-cycle step that grows with the directory. The
        guard decides which of them are written this cycle."""
        planned: dict[Side, list[str]] = {s: [] for s in SIDES}
        onprem, aws = self.sides["onprem"].objects, self.sides["aws"].objects
        gone = []
        for pid, pair in self.state.pairs.items():
            on_onprem = pair.onprem_guid in onprem
            on_aws = pair.aws_guid in aws
            if on_onprem and on_aws:
                continue
            if on_onprem:
                planned["onprem"].append(pid)
            elif on_aws:
                planned["aws"].append(pid)
            else:
                gone.append(pid)
        for pid in gone:
            self._unpair(pid)
        due: dict[Side, list[str]] = {}
        for side in SIDES:
            self.vanishing.update(planned[side])
            held = side in self.hold_deletes
            if planned[side] and held:
                self.report.deletes_held[side] = len(planned[side])
                self.log.warning(
                    "deletes_held_after_dc_change",
                    side=side,
                    planned_deletes=len(planned[side]),
                    reason=f"the {other(side)} side moved to another DC that may not hold "
                    "every write yet; the deletes wait for the hold to end",
                )
            verdict = self.guard.judge(
                self.state,
                side,
                planned[side],
                objects=len(self.sides[side].objects),
                now=self.now,
                allow_mass_delete=self.allow_mass_delete,
                held=held,
                dry_run=self.dry_run,
            )
            self.report.deletes_in_window[side] = verdict.in_window
            self.report.deletes_pending[side] = verdict.pending
            self.report.deletes_settling[side] = verdict.settling
            if verdict.rule is not None:
                self.report.guard_tripped[side] = verdict.pending
                self.report.guard_rule[side] = verdict.rule
            due[side] = list(verdict.due)
        return due

    def _record_deletes(self) -> None:
        """Count this cycle's written deletes in the rolling window (those written before a
        failure too; a dry run's state is a copy)."""
        for side in SIDES:
            self.report.deletes_in_window[side] = self.guard.record(
                self.state,
                side,
                self.deleted[side],
                now=self.now,
                allow_mass_delete=self.allow_mass_delete,
            )
            if self.deleted[side]:
                self.report.deletes_pending[side] = max(
                    self.report.deletes_pending.get(side, 0) - len(self.deleted[side]), 0
                )

    def _deletes(self, planned: dict[Side, list[str]]) -> None:
        for side in SIDES:
            victims = []
            for pid in planned[side]:
                obj = self._present(self.state.pairs[pid], side)
                if obj is not None:
                    victims.append((depth_below(obj.dn, self.sides[side].root), pid, obj))
            depth = None
            for level, pid, obj in sorted(victims, key=lambda v: -v[0]):
                if level != depth:  # children first: one depth at a time
                    self.barrier.flush()
                    depth = level
                dn = obj.dn
                self._submit(
                    side,
                    "delete",
                    dn,
                    partial(_delete, dn=dn),
                    partial(self._deleted, side=side, pid=pid, guid=obj.guid),
                    guid=obj.guid,
                )
            self.barrier.flush()

    def _deleted(self, done: bool, _: object, *, side: Side, pid: str, guid: str) -> None:
        if done:
            self.sides[side].remove(guid)
            self._unpair(pid)
            self.deleted[side].append(pid)

    # -- structure: creates, adoptions, renames and moves -------------------------------------

    def _retry(self, side: Side, guid: str) -> None:
        self.report.retry[side].add(guid)

    def _retry_pair(self, pair: PairState) -> None:
        for side in SIDES:
            self._retry(side, guid_of(pair, side))

    def _pairs(self) -> list[tuple[str, PairState]]:
        """The pairs this cycle merges: all of them, or those of the focus."""
        if self.focus is None:
            return list(self.state.pairs.items())
        pairs = self.state.pairs
        return [(pid, pairs[pid]) for pid in sorted(self.dirty) if pid in pairs]

    def _structure(self) -> None:
        work: list[tuple[int, int, Side, str]] = []  # parents, then users before groups
        seen: set[str] = set()
        for side in SIDES:
            paired = self.pair_of[side]
            mirror = self.sides[side]
            guids = mirror.objects.keys() if self.focus is None else self.focus.get(side, set())
            for guid in guids:
                pid = paired.get(guid)
                if pid is not None:
                    self.dirty.add(pid)
                    if pid in seen:
                        continue  # a pair is visited once
                    seen.add(pid)
                    pair = self.state.pairs[pid]
                    for visit in SIDES:  # from the first side that holds it
                        present = self._present(pair, visit)
                        if present is not None:
                            depth = depth_below(present.dn, self.sides[visit].root)
                            work.append((depth, KIND_ORDER[pair.kind], visit, present.guid))
                            break
                    continue
                obj = mirror.objects.get(guid)
                if obj is not None:
                    depth = depth_below(obj.dn, mirror.root)
                    work.append((depth, KIND_ORDER[obj.kind], side, guid))
        work.sort()
        self._structure_passes(work)

    def _structure_passes(self, work: list[tuple[int, int, Side, str]]) -> None:
        """The work list, in order, until no progress: the retry queue of what waits on a
        parent not synced yet. Creates go out a wave (depth, kind) at a time."""
        for _ in range(_MAX_PASSES):
            remaining = []
            wave: tuple[int, int] | None = None
            for item in work:
                if item[:2] != wave:  # a new depth or kind: what it waits on must be written
                    self.barrier.flush()
                    wave = item[:2]
                if not self._structure_safe(item[2], item[3]):
                    remaining.append(item)
            self.barrier.flush()
            if len(remaining) == len(work):
                break
            work = remaining
        self.report.deferred += len(work)
        for _, _, side, guid in work:
            self._retry(side, guid)
            waiting = self.sides[side].objects.get(guid)
            self.log.info("identity_change_deferred", side=side, dn=waiting.dn if waiting else guid)

    def _structure_safe(self, side: Side, guid: str) -> bool:
        """``_structure_one``, unless the object is quarantined (it waits its backoff, not the
        retry queue); an object whose data cannot be applied is quarantined, the rest go on."""
        key = self._key(side, guid)
        if self._waits(key):
            return True
        try:
            return self._structure_one(side, guid)
        except ValueError as exc:  # e.g. a DN that does not parse
            obj = self.sides[side].objects.get(guid)
            dn = obj.dn if obj is not None else guid
            self._quarantine(key, side, "invalid", f"{dn!r}: {exc}", found=(side, guid, dn))
            return True

    def _structure_one(self, side: Side, guid: str) -> bool:
        """Handle one object; False when it waits on a parent not yet synced."""
        obj = self.sides[side].objects.get(guid)
        if obj is None:
            return True
        pid = self.pair_of[side].get(guid)
        if pid is None:
            return self._create_or_adopt(side, obj)
        pair = self.state.pairs[pid]
        if self._present(pair, other(side)) is None:
            return True  # deleted on the other side: the delete pass handles it
        return self._relocate(pair)

    def _create_or_adopt(self, source: Side, obj: DirObject) -> bool:
        target = other(source)
        location = self._location(source, obj)
        if location is None:
            return False
        parent_dn = self._parent_dn(target, location[0])
        if parent_dn is None:
            return False
        if self._name_taken_at_source(source, obj):
            return True
        rdn_type = RDN_TYPE[obj.kind]
        target_dn = make_dn(rdn_type, location[1], parent_dn)
        planned = (target, normalize_dn(target_dn))
        if planned in self.barrier.creating:
            self.barrier.flush()  # the same name is being created: decide once it exists
        existing = self.sides[target].guid_at(target_dn)
        if existing is not None:
            found = self.sides[target].objects[existing]
            if existing in self.pair_of[target] or found.kind != obj.kind:
                self._name_taken_at_target(source, obj, found)
                return True
            self.dirty.add(self._pair(source, obj, found, location).onprem_guid)
            self.log.info("identity_object_adopted", side=target, dn=target_dn, guid=existing)
            return True
        attributes = self._creation_attributes(source, target, obj)
        members: list[DirObject] = []
        if obj.kind == "group":  # members already synced go in with the add (as ldapadd does)
            pids, _ = self._member_pids(source, obj)
            members = self._objects(target, pids or set())
            if members:
                attributes["member"] = tuple(m.dn for m in members)
        self.barrier.creating.add(planned)
        self._submit(
            target,
            "add",
            target_dn,
            partial(_add, kind=obj.kind, dn=target_dn, attributes=attributes),
            partial(
                self._created,
                source=source,
                obj=obj,
                target_dn=target_dn,
                attributes=attributes,
                members=members,
                location=location,
            ),
            attributes=list(attributes),
            key=obj.guid,
        )
        return True

    def _name_taken_at_source(self, source: Side, obj: DirObject) -> bool:
        """True when another object of ``source`` has the same name to AD (``Weiß`` and
        ``Weiss``: a directory that folds less, as Samba, holds both) and keeps it: the one
        already synced, else the first by DN. Then ``obj`` is quarantined naming both."""
        mirror = self.sides[source]
        rivals = mirror.same_name(obj.guid)
        if not rivals:
            return False
        candidates = [obj.guid, *rivals]
        synced = [g for g in candidates if g in self.pair_of[source]]
        owner = min(synced or candidates, key=lambda g: (mirror.objects[g].dn, g))
        if owner == obj.guid:
            return False
        holder = mirror.objects[owner]
        self.report.failed += 1
        self._quarantine(
            obj.guid,
            other(source),
            "collision",
            f"{obj.dn!r} and {holder.dn!r} on {source} are one name to AD (it compares names "
            f"ignoring case and width, ß as ss), so only {holder.dn!r} is synced",
            other_dn=holder.dn,
            found=(source, obj.guid, obj.dn),
        )
        return True

    def _name_taken_at_target(self, source: Side, obj: DirObject, found: DirObject) -> None:
        """Another object holds the name on the target: quarantine ``obj`` naming both."""
        target = other(source)
        pid = self.pair_of[target].get(found.guid)
        pair = None if pid is None else self.state.pairs.get(pid)
        twin = None if pair is None else self._present(pair, source)
        if twin is not None:
            whose = f"synced with {twin.dn!r} on {source}"
        elif pair is not None:
            whose = "synced with an object gone from " + source
        else:
            whose = f"a {found.kind}, not a {obj.kind}"
        self.report.failed += 1
        self._quarantine(
            obj.guid,
            target,
            "collision",
            f"{obj.dn!r} cannot be created on {target}: {found.dn!r} holds that name there "
            f"({whose})",
            other_dn=found.dn,
            found=(source, obj.guid, obj.dn),
        )

    def _created(
        self,
        done: bool,
        new_guid: object,
        *,
        source: Side,
        obj: DirObject,
        target_dn: str,
        attributes: dict[str, Values],
        members: list[DirObject],
        location: Location,
    ) -> None:
        target = other(source)
        if not done or not isinstance(new_guid, str):
            self._retry(source, obj.guid)
            return  # refused: retried next cycle
        created = DirObject(
            guid=new_guid,
            kind=obj.kind,
            dn=target_dn,
            attributes={k.lower(): v for k, v in attributes.items() if k != "member"},
            members=frozenset(m.guid for m in members),
        )
        self.sides[target].insert(created)
        pair = self._pair(source, obj, created, location)
        self.dirty.add(pid_of(pair))
        # The base is what the new twin holds, so the source's values (references
        # included, written by the attribute pass) count as changes to copy over.
        for name, rule in self.mapping.rules_for(obj.kind).items():
            base = () if rule.transform == "dn" else self._canonical(target, created, rule)
            pair.attributes[name] = list(base or ())

    def _pair(self, source: Side, obj: DirObject, twin: DirObject, location: Location) -> PairState:
        onprem, aws = (obj, twin) if source == "onprem" else (twin, obj)
        pid = onprem.guid
        self.state.pairs[pid] = PairState(
            onprem_guid=onprem.guid,
            aws_guid=aws.guid,
            kind=obj.kind,
            parent=location[0],
            rdn=location[1],
        )
        self.pair_of["onprem"][onprem.guid] = pid
        self.pair_of["aws"][aws.guid] = pid
        return self.state.pairs[pid]

    def _creation_attributes(self, source: Side, target: Side, obj: DirObject) -> dict[str, Values]:
        attributes: dict[str, Values] = {}
        for rule in self.mapping.rules_for(obj.kind).values():
            if rule.transform == "dn":
                continue  # references are written by the attribute pass, once they exist
            canonical = self._canonical(source, obj, rule)
            if canonical is None or not canonical:
                continue
            attr, values, _ = self._to_side(target, None, rule, canonical)
            attributes[attr] = values
        if obj.kind == "user" and "useraccountcontrol" not in {a.lower() for a in attributes}:
            attributes["userAccountControl"] = (str(UAC_NORMAL_ACCOUNT | UAC_ACCOUNTDISABLE),)
        return attributes

    def _relocate(self, pair: PairState) -> bool:
        now: dict[Side, Location] = {}
        for side in SIDES:
            present = self._present(pair, side)
            location = None if present is None else self._location(side, present)
            if location is None:
                return False  # moved under an OU not synced yet
            now[side] = location
        base = (pair.parent, pair.rdn)
        if now["onprem"] == now["aws"]:
            pair.parent, pair.rdn = now["onprem"]
            return True
        if now["aws"] == base:
            winner: Side = "onprem"
        elif now["onprem"] == base:
            winner = "aws"
        else:
            winner = self.mapping.authority(None)
            self._conflict(pair, "dn", winner)
        loser = other(winner)
        parent_dn = self._parent_dn(loser, now[winner][0])
        if parent_dn is None:
            return False
        obj = self._present(pair, loser)
        assert obj is not None  # noqa: S101 - checked above
        new_rdn = make_rdn(RDN_TYPE[pair.kind], now[winner][1])
        old_dn = obj.dn
        self.barrier.flush()  # a move is applied alone: it changes the DNs the next writes use
        self._submit(
            loser,
            "move",
            old_dn,
            partial(_move, dn=old_dn, new_rdn=new_rdn, new_parent=parent_dn),
            partial(self._moved, pair=pair, side=loser, guid=obj.guid, location=now[winner]),
            guid=obj.guid,
        )
        self.barrier.flush()
        return True

    def _moved(
        self,
        done: bool,
        new_dn: object,
        *,
        pair: PairState,
        side: Side,
        guid: str,
        location: Location,
    ) -> None:
        if not done or not isinstance(new_dn, str):
            self._retry_pair(pair)
        else:
            self.sides[side].moved(guid, new_dn)
            pair.parent, pair.rdn = location

    def _conflict(self, pair: PairState, attribute: str, winner: Side) -> None:
        self.report.conflicts += 1
        self.log.warning(
            "identity_conflict", pair=pair.onprem_guid, attribute=attribute, winner=winner
        )

    # -- attributes --------------------------------------------------------------------------

    def _attributes(self) -> None:
        pairs = self._pairs()
        self.report.merged = len(pairs)
        for pid, pair in pairs:
            if self._waits(pid):
                continue  # quarantined: waits its backoff
            try:
                self._merge_attributes(pair)
            except ValueError as exc:  # data that cannot be applied: this pair only
                self._quarantine_pair(pair, exc)
        self.barrier.flush()

    def _quarantine_pair(self, pair: PairState, exc: ValueError) -> None:
        present = self._source_of(pid_of(pair), "aws")
        side: Side = "aws" if present is None else other(present[0])
        self._quarantine(pid_of(pair), side, "invalid", str(exc))

    def _merge_attributes(self, pair: PairState) -> None:
        objs = {s: self._present(pair, s) for s in SIDES}
        if objs["onprem"] is None or objs["aws"] is None:
            return
        changes: dict[Side, dict[str, Values]] = {s: {} for s in SIDES}
        mirrored: dict[Side, dict[str, Values]] = {s: {} for s in SIDES}
        decided: dict[Side, dict[str, Values]] = {s: {} for s in SIDES}
        for name, rule in self.mapping.rules_for(pair.kind).items():
            onprem = self._canonical("onprem", objs["onprem"], rule)
            aws = self._canonical("aws", objs["aws"], rule)
            if onprem is None or aws is None:
                self._retry_pair(pair)
                continue  # a reference not paired yet: retried next cycle
            merged = self._merge(pair, name, onprem, aws)
            if merged is None:
                continue
            loser, value = merged
            attr, side_values, mirror_values = self._to_side(loser, objs[loser], rule, value)
            changes[loser][attr] = side_values
            mirrored[loser][attr.lower()] = mirror_values
            decided[loser][name] = value
        for side in SIDES:
            self._modify(
                side,
                objs[side],
                changes[side],
                partial(
                    self._modified,
                    pair=pair,
                    obj=objs[side],
                    mirrored=mirrored[side],
                    decided=decided[side],
                ),
            )

    def _modified(
        self,
        done: bool,
        _: object,
        *,
        pair: PairState,
        obj: DirObject | None,
        mirrored: dict[str, Values],
        decided: dict[str, Values],
    ) -> None:
        if not done:
            self._retry_pair(pair)
            return
        if obj is not None:
            obj.attributes.update(mirrored)
        # the base moves only once the losing side holds the value
        pair.attributes.update({n: list(v) for n, v in decided.items()})

    def _merge(
        self, pair: PairState, name: str, onprem: Values, aws: Values
    ) -> tuple[Side, Values] | None:
        """(side to write, value) or None when nothing is to be written."""
        base = pair.attributes.get(name)
        base_values = None if base is None else tuple(base)
        if onprem == aws:
            pair.attributes[name] = list(onprem)
            return None
        if base_values is not None and aws == base_values:
            return "aws", onprem
        if base_values is not None and onprem == base_values:
            return "onprem", aws
        winner = self.mapping.authority(name)
        if base_values is not None:
            self._conflict(pair, name, winner)
        return other(winner), (onprem if winner == "onprem" else aws)

    def _modify(
        self, side: Side, obj: DirObject | None, replace: dict[str, Values], then: Then
    ) -> None:
        if not replace or obj is None:
            then(True, None)
            return
        dn = obj.dn
        self._submit(
            side,
            "modify",
            dn,
            partial(_modify, dn=dn, replace=replace),
            then,
            guid=obj.guid,
            attributes=list(replace),
        )

    # -- value translation -------------------------------------------------------------------

    def _canonical(self, side: Side, obj: DirObject | None, rule: AttributeRule) -> Values | None:
        """The value in on-prem terms (references as pair ids); None while a reference waits."""
        attr = (rule.onprem if side == "onprem" else rule.aws_name).lower()
        raw = obj.attributes.get(attr, ()) if obj is not None else ()
        if rule.transform == "enabled":
            if not raw:
                return ()
            return ("FALSE",) if int(raw[0]) & UAC_ACCOUNTDISABLE else ("TRUE",)
        if rule.transform == "suffix":
            here, onprem = _suffixes(rule, side)
            return tuple(sorted(_swap_suffix(v, here, onprem) for v in raw))
        if rule.transform == "dn":
            return self._references(side, raw)
        return tuple(sorted(raw))

    def _references(self, side: Side, refs: Values) -> Values | None:
        """Pair ids of the referenced objects; None while one is not synced yet."""
        mirror = self.sides[side]
        pids = []
        for ref in refs:  # references held as GUIDs by the mirror
            guid = mirror.resolve(ref)
            if guid is None:
                if mirror.pending(ref):
                    return None
                continue  # gone, or outside the scope: not synced
            pid = self.pair_of[side].get(guid)
            if pid is None:
                return None
            pids.append(pid)
        return tuple(sorted(pids))

    def _to_side(
        self, side: Side, obj: DirObject | None, rule: AttributeRule, value: Values
    ) -> tuple[str, Values, Values]:
        """(attribute, values to write, values the mirror keeps: GUIDs for references)."""
        attr = rule.onprem if side == "onprem" else rule.aws_name
        if rule.transform == "enabled":
            current = obj.attributes.get(attr.lower(), ()) if obj else ()
            uac = int(current[0]) if current else UAC_NORMAL_ACCOUNT
            disabled = value == ("FALSE",)
            uac = (uac | UAC_ACCOUNTDISABLE) if disabled else (uac & ~UAC_ACCOUNTDISABLE)
            return attr, (str(uac),), (str(uac),)
        if rule.transform == "suffix":
            here, onprem = _suffixes(rule, side)
            swapped = tuple(_swap_suffix(v, onprem, here) for v in value)
            return attr, swapped, swapped
        if rule.transform == "dn":
            dns, guids = [], []
            for pid in value:
                pair = self.state.pairs.get(pid)
                target = None if pair is None else self._present(pair, side)
                if target is not None:
                    dns.append(canonical_dn(target.dn))  # our escaping: '#', edge spaces
                    guids.append(target.guid)
            return attr, tuple(dns), tuple(guids)
        return attr, value, value

    # -- memberships -------------------------------------------------------------------------

    def _member_pids(self, side: Side, obj: DirObject) -> tuple[set[str] | None, bool]:
        """(pair ids of the synced members, or None while a member DN is not resolved yet;
        True when a member's twin is not created yet, so the group is looked at again)."""
        mirror = self.sides[side]
        pids = set()
        unpaired = False
        for ref in obj.members:
            guid = mirror.resolve(ref)
            if guid is None:
                if mirror.pending(ref):
                    return None, True  # it could be a member of the base: do not guess
                continue
            pid = self.pair_of[side].get(guid)
            if pid is None:
                unpaired = True  # not in the base either: merge the rest, add it later
            else:
                pids.add(pid)
        return pids, unpaired

    def _memberships(self) -> None:
        for pid, pair in self._pairs():
            if pair.kind != "group" or self._waits(pid):
                continue  # a quarantined group waits its backoff
            try:
                self._merge_members(pair)
            except ValueError as exc:  # data that cannot be applied: this group only
                self._quarantine_pair(pair, exc)
        self.barrier.flush()

    def _merge_members(self, pair: PairState) -> None:
        """A set merge against the base: adds and removes of both sides, written to each."""
        objs = {s: self._present(pair, s) for s in SIDES}
        if objs["onprem"] is None or objs["aws"] is None:
            return
        now: dict[Side, set[str]] = {}
        for side in SIDES:
            group = objs[side]
            assert group is not None  # noqa: S101 - checked above
            pids, waiting = self._member_pids(side, group)
            if waiting:
                self._retry_pair(pair)
            if pids is not None:
                now[side] = pids
        if len(now) < len(SIDES):
            return
        base = set(pair.members)
        for pid in base & self.vanishing:
            # a member deleted on one side stays in the group until its delete is written
            # (which removes it): held by the guard, that removal must not go out alone
            member = self.state.pairs.get(pid)
            for side in SIDES:
                if member is not None and self._present(member, side) is None:
                    now[side].add(pid)
        added = (now["onprem"] - base) | (now["aws"] - base)
        removed = (base - now["onprem"]) | (base - now["aws"])
        merged = (base | added) - removed
        writes = []
        for side in SIDES:
            group = objs[side]
            assert group is not None  # noqa: S101 - checked above
            joining = self._objects(side, merged - now[side])
            leaving = self._objects(side, now[side] - merged)
            if joining or leaving:
                writes.append((side, group, joining, leaving))
        outcome = _Join(len(writes), partial(self._members_merged, pair, merged))
        for side, group, joining, leaving in writes:
            dn = group.dn
            self._submit(
                side,
                "members",
                dn,
                partial(
                    _modify_members,
                    dn=dn,
                    add=[o.dn for o in joining],
                    remove=[o.dn for o in leaving],
                ),
                partial(
                    self._members_written,
                    group=group,
                    joining=joining,
                    leaving=leaving,
                    outcome=outcome,
                ),
                guid=group.guid,
                attributes=["member"],
            )

    @staticmethod
    def _members_written(
        done: bool,
        _: object,
        *,
        group: DirObject,
        joining: list[DirObject],
        leaving: list[DirObject],
        outcome: _Join,
    ) -> None:
        if done:
            left = {o.guid for o in leaving}
            group.members = frozenset((group.members - left) | {o.guid for o in joining})
        outcome.one(done)

    def _members_merged(self, pair: PairState, merged: set[str], ok: bool) -> None:
        if ok:
            pair.members = sorted(merged)
        else:
            self._retry_pair(pair)

    def _objects(self, side: Side, pids: set[str]) -> list[DirObject]:
        objects = []
        for pid in sorted(pids):
            obj = self._present(self.state.pairs[pid], side)
            if obj is not None:
                objects.append(obj)
        return objects


class _Join:
    """Calls ``then(all written)`` once ``count`` writes are settled (at once when none)."""

    def __init__(self, count: int, then: Callable[[bool], None]) -> None:
        self.left = count
        self.ok = True
        self.then = then
        if count == 0:
            then(True)

    def one(self, done: bool) -> None:
        self.ok = self.ok and done
        self.left -= 1
        if self.left == 0:
            self.then(self.ok)


# The writes, as calls on whichever writer of the side runs them.
def _add(writer: DirectoryWriter, *, kind: Kind, dn: str, attributes: dict[str, Values]) -> str:
    return writer.add(kind, dn, attributes)


def _modify(writer: DirectoryWriter, *, dn: str, replace: dict[str, Values]) -> None:
    writer.modify(dn, replace)


def _move(writer: DirectoryWriter, *, dn: str, new_rdn: str, new_parent: str) -> str:
    return writer.move(dn, new_rdn, new_parent)


def _delete(writer: DirectoryWriter, *, dn: str) -> None:
    writer.delete(dn)


def _modify_members(writer: DirectoryWriter, *, dn: str, add: list[str], remove: list[str]) -> None:
    writer.modify_members(dn, add, remove)


def pid_of(pair: PairState) -> str:
    return pair.onprem_guid


def guid_of(pair: PairState, side: Side) -> str:
    return pair.onprem_guid if side == "onprem" else pair.aws_guid


def _suffixes(rule: AttributeRule, side: Side) -> tuple[str, str]:
    """(this side's suffix, the on-prem suffix) for reading a value on ``side``."""
    onprem = rule.onprem_suffix or ""
    aws = rule.aws_suffix or ""
    return (aws, onprem) if side == "aws" else (onprem, onprem)


def _swap_suffix(value: str, old: str, new: str) -> str:
    if old and value.lower().endswith(old.lower()):
        return value[: len(value) - len(old)] + new
    return value
