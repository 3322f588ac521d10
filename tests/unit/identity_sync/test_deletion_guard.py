"""The deletion guard across cycles: deletes settle, are judged together, only they are held,
and a trip is logged once, then as a reminder."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from indutech_identity_sync.config import Mapping, Side
from indutech_identity_sync.deletion_guard import DeleteGuard
from indutech_identity_sync.directory import DirectoryWriter, DryRunWriter
from indutech_identity_sync.engine import Reconciler
from indutech_identity_sync.state import SyncState
from tests.unit.identity_sync.test_engine import Pair, aws_dn, mapping

T0 = 1_000_000.0


@pytest.fixture(autouse=True, params=[1, 3], ids=["one-writer", "three-writers"])
def writers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """As in test_engine: one writer per side, and a pool of three."""
    count: int = request.param
    monkeypatch.setattr(Pair, "writers", count)
    return count


def guard_mapping(**limits: Any) -> Mapping:
    """The shipped defaults (10 % and 50 per burst, 25 % and 200 per hour, 30 s settle)."""
    rules: dict[str, Any] = {
        "max_count": 50,
        "max_percent": 10.0,
        "min_objects_for_percent": 20,
        "window_s": 3600.0,
        "window_max_count": 200,
        "window_max_percent": 25.0,
        "settle_s": 30.0,
        "reminder_s": 300.0,
    }
    rules.update(limits)
    return mapping(deletion_guard=rules)


def guard_events(logs: Sequence[MutableMapping[str, Any]]) -> list[str]:
    return [e["event"] for e in logs if str(e["event"]).startswith("deletion_guard")]


class TestSettle:
    def test_a_delete_waits_the_settle_time_and_a_disable_does_not(self) -> None:
        """A delete is written once it has waited settle_s; a disable seen in the same cycle
        is written at once, and the worker is told when the delete is due."""
        p = Pair(guard_mapping())
        gone = p.onprem.user("Gone")
        boss = p.onprem.user("Boss")
        p.converge()
        p.onprem.remove(gone)
        p.onprem.assign(boss, userAccountControl="514")
        guard = DeleteGuard(p.mapping.deletion_guard)
        report = p.sync(now=T0, guard=guard)
        assert p.aws.get(aws_dn(boss), "userAccountControl") == "514"
        assert report.writes["aws", "delete"] == 0
        assert (report.deletes_pending["aws"], report.deletes_settling["aws"]) == (1, 1)
        assert not guard.due(p.state, T0 + 29.9)
        assert p.sync(now=T0 + 29.9, guard=guard).writes["aws", "delete"] == 0
        assert guard.due(p.state, T0 + 30)
        report = p.sync(now=T0 + 30, guard=guard)
        assert report.writes["aws", "delete"] == 1
        assert report.deletes_pending["aws"] == 0
        assert aws_dn(gone) not in p.aws.dns()
        assert p.state.pending_deletes == {}
        assert not guard.due(p.state, T0 + 60)

    @pytest.mark.parametrize(
        ("settle_s", "written"), [(30.0, 0), (0.0, 6)], ids=["settle-30s", "no-settle"]
    )
    def test_a_trickled_mass_delete_is_judged_as_one(self, settle_s: float, written: int) -> None:
        """30 % of the side deleted in batches of 1, 2, 3, 3, 3 (each under the 10 % of one
        cycle): with the settle time the guard sees them together and writes none; without
        it (as before), 6 deletes go out before the window's 25 % stops the rest."""
        p = Pair(guard_mapping(settle_s=settle_s))
        users = [p.onprem.user(f"T{i:02}") for i in range(40)]
        p.converge()
        guard = DeleteGuard(p.mapping.deletion_guard)
        deleted = 0
        reports = []
        for step, batch in enumerate([1, 2, 3, 3, 3]):
            for user in users[deleted : deleted + batch]:
                p.onprem.remove(user)
            deleted += batch
            reports.append(p.sync(now=T0 + 2 * step, guard=guard))
        assert sum(r.writes["aws", "delete"] for r in reports) == written
        if settle_s:
            assert [r.guard_tripped for r in reports] == [
                {},
                {},
                {"aws": 6},
                {"aws": 9},
                {"aws": 12},
            ]
            assert reports[-1].guard_rule == {"aws": "pending"}
            assert p.sync(now=T0 + 3600, guard=guard).writes["aws", "delete"] == 0  # held
        assert len(p.aws.dns()) == 40 - written

    def test_every_other_change_goes_on_while_the_deletes_are_held(self) -> None:
        """With the guard tripped, a disable and a new user still go out at once."""
        p = Pair(guard_mapping(settle_s=0, max_count=2))
        users = [p.onprem.user(f"H{i}") for i in range(5)]
        p.converge()
        for user in users[:3]:
            p.onprem.remove(user)
        guard = DeleteGuard(p.mapping.deletion_guard)
        assert p.sync(now=T0, guard=guard).guard_tripped == {"aws": 3}
        p.onprem.assign(users[4], userAccountControl="514")
        p.onprem.user("New")
        report = p.sync(now=T0 + 1, guard=guard)
        assert report.guard_tripped == {"aws": 3}
        assert (report.writes["aws", "modify"], report.writes["aws", "add"]) == (1, 1)
        assert report.writes["aws", "delete"] == 0
        assert p.aws.get(aws_dn(users[4]), "userAccountControl") == "514"

    def test_pending_deletes_survive_a_restart(self) -> None:
        """The first-seen times are in the saved state: after a restart (a new guard, the
        state read back) the settle time goes on from the first sighting."""
        p = Pair(guard_mapping())
        user = p.onprem.user("R")
        p.converge()
        pid = next(iter(p.state.pairs))
        p.onprem.remove(user)
        p.sync(now=T0)
        p.state = SyncState.model_validate_json(p.state.model_dump_json())
        assert p.state.pending_deletes == {"aws": {pid: T0}}
        assert p.sync(now=T0 + 30).writes["aws", "delete"] == 1

    def test_a_restored_object_drops_its_pending_delete(self) -> None:
        """An object back on its side (same objectGUID, e.g. from the recycle bin) before its
        delete settled is no longer pending, and nothing is deleted."""
        p = Pair(guard_mapping())
        user = p.onprem.user("Back")
        p.converge()
        guid = p.onprem.guid(user)
        assert guid is not None
        entry = p.onprem.entries[guid]
        p.onprem.remove(user)
        assert p.sync(now=T0).deletes_pending["aws"] == 1
        p.onprem.entries[guid] = entry
        report = p.sync(now=T0 + 30)
        assert (report.writes["aws", "delete"], report.deletes_pending["aws"]) == (0, 0)
        assert p.state.pending_deletes == {}
        assert aws_dn(user) in p.aws.dns()

    def test_the_window_counts_the_pending_deletes_too(self) -> None:
        """3 deletes written, then 3 more seen: 6 > window_max_count 5 trips the guard at
        once, while the new ones still settle."""
        p = Pair(guard_mapping(window_max_count=5, min_objects_for_percent=1000))
        users = [p.onprem.user(f"W{i}") for i in range(8)]
        p.converge()
        guard = DeleteGuard(p.mapping.deletion_guard)
        for user in users[:3]:
            p.onprem.remove(user)
        p.sync(now=T0, guard=guard)
        assert p.sync(now=T0 + 30, guard=guard).writes["aws", "delete"] == 3
        for user in users[3:6]:
            p.onprem.remove(user)
        report = p.sync(now=T0 + 40, guard=guard)
        assert (report.guard_tripped, report.guard_rule) == ({"aws": 3}, {"aws": "window"})
        assert (report.deletes_in_window["aws"], report.deletes_settling["aws"]) == (3, 3)

    def test_a_member_held_for_its_delete_stays_in_its_groups(self) -> None:
        """A user deleted on-prem leaves its on-prem groups at once (AD does that); on AWS it
        stays a member until its delete is written, which removes it: no membership write."""
        p = Pair(guard_mapping())
        user = p.onprem.user("M")
        group = p.onprem.group("G", members=(user,))
        p.converge()
        p.onprem.remove(user)
        report = p.sync(now=T0)
        assert report.writes["aws", "members"] == 0
        assert p.aws.members(aws_dn(group)) == {aws_dn(user)}
        report = p.sync(now=T0 + 30)
        assert (report.writes["aws", "delete"], report.writes["aws", "members"]) == (1, 0)
        assert p.aws.members(aws_dn(group)) == set()
        assert p.sync(now=T0 + 31).total_writes == 0

    def test_a_dry_run_lists_the_deletes_that_still_settle(self) -> None:
        """The plan shows what goes out once settled, not an empty list."""
        p = Pair(guard_mapping())
        user = p.onprem.user("Plan")
        p.converge()
        p.onprem.remove(user)
        writers: dict[Side, DryRunWriter] = {s: DryRunWriter(s) for s in ("onprem", "aws")}
        Reconciler(
            p.mapping,
            p.state.model_copy(deep=True),
            {"onprem": p.onprem.snapshot(), "aws": p.aws.snapshot()},
            dict[Side, DirectoryWriter](writers),
            dry_run=True,
            clock=lambda: T0,
        ).run()
        assert [(op, dn) for op, dn, _ in writers["aws"].planned] == [("delete", aws_dn(user))]
        assert aws_dn(user) in p.aws.dns()


class TestTripLog:
    def test_logged_once_then_a_reminder_then_cleared(self) -> None:
        """30 cycles in 5 minutes log one trip; then a reminder each reminder_s (and a cycle
        is due for it); --allow-mass-delete writes the deletes and the clear is logged."""
        p = Pair(guard_mapping(settle_s=0, max_count=2))
        users = [p.onprem.user(f"L{i}") for i in range(5)]
        p.converge()
        for user in users[:3]:
            p.onprem.remove(user)
        guard = DeleteGuard(p.mapping.deletion_guard)
        with capture_logs() as logs:
            for second in range(0, 300, 10):
                p.sync(now=T0 + second, guard=guard)
        assert guard_events(logs) == ["deletion_guard_tripped"]
        tripped = next(e for e in logs if e["event"] == "deletion_guard_tripped")
        assert (tripped["log_level"], tripped["rule"], tripped["planned_deletes"]) == (
            "error",
            "pending",
            3,
        )
        assert "--allow-mass-delete" in tripped["action"]
        assert not guard.due(p.state, T0 + 299)
        assert guard.due(p.state, T0 + 300)
        with capture_logs() as logs:
            p.sync(now=T0 + 300, guard=guard)
            p.sync(now=T0 + 310, guard=guard)
        assert guard_events(logs) == ["deletion_guard_still_tripped"]
        assert next(e for e in logs if e["event"].endswith("still_tripped"))["tripped_for_s"] == 300
        with capture_logs() as logs:
            report = p.sync(now=T0 + 320, guard=guard, allow_mass_delete=True)
        assert report.writes["aws", "delete"] == 3
        assert guard_events(logs) == ["deletion_guard_cleared"]
        assert not guard.trips

    def test_allow_mass_delete_skips_the_settle_time(self) -> None:
        """An operator's run writes what is pending, settled or not."""
        p = Pair(guard_mapping())
        user = p.onprem.user("Now")
        p.converge()
        p.onprem.remove(user)
        assert p.sync(now=T0, allow_mass_delete=True).writes["aws", "delete"] == 1
