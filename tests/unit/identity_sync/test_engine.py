"""The reconcile cycle against two in-memory directories: every rule of the three-way merge."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from indutech_identity_sync.config import Kind, Mapping, Side
from indutech_identity_sync.deletion_guard import DeleteGuard
from indutech_identity_sync.directory import DirectoryWriter, DryRunWriter
from indutech_identity_sync.engine import CycleReport, Reconciler
from indutech_identity_sync.mirror import Mirror
from indutech_identity_sync.model import DirObject, Values, make_dn, normalize_dn, split_rdn
from indutech_identity_sync.quarantine import Held, Quarantine
from indutech_identity_sync.state import MemoryObjects, S3StateStore, SyncState
from tests.support.fake_directory import FakeDirectory

ONPREM_ROOT = "OU=InduTech,DC=corp,DC=indutech,DC=test"
AWS_ROOT = "OU=AWS,DC=aws,DC=indutech,DC=test"


def mapping(**overrides: Any) -> Mapping:
    raw: dict[str, Any] = {
        "onprem_root": ONPREM_ROOT,
        "aws_root": AWS_ROOT,
        "attributes": {
            "sAMAccountName": {"onprem": "sAMAccountName", "kinds": ["user", "group"]},
            "mail": {"onprem": "mail"},
            "department": {"onprem": "department"},
            "title": {"onprem": "title"},
            "telephoneNumber": {"onprem": "telephoneNumber", "authority": "aws"},
            "manager": {"onprem": "manager", "transform": "dn"},
            "enabled": {"onprem": "userAccountControl", "transform": "enabled"},
            "upn": {
                "onprem": "userPrincipalName",
                "transform": "suffix",
                "onprem_suffix": "@corp.indutech.test",
                "aws_suffix": "@aws.indutech.test",
            },
            "description": {"onprem": "description", "kinds": ["ou", "user", "group"]},
        },
        # no settle time: a delete goes out with the cycle that sees it (TestSettle has one)
        "deletion_guard": {
            "max_count": 10,
            "max_percent": 50,
            "min_objects_for_percent": 5,
            "settle_s": 0,
        },
    }
    raw.update(overrides)
    return Mapping.model_validate(raw)


class Clock:
    """Monotonic seconds the test moves on by hand (the quarantine's backoff)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Connection:
    """One of several connections to a fake directory: each write waits a random moment
    first, so writes sent together finish in a shuffled order (as on a real DC)."""

    def __init__(self, directory: FakeDirectory, lock: threading.Lock, seed: int) -> None:
        self.directory = directory
        self.lock = lock
        self.random = random.Random(seed)

    def _jitter(self) -> None:
        time.sleep(self.random.random() / 1000)

    def add(self, kind: Kind, dn: str, attributes: dict[str, Values]) -> str:
        self._jitter()
        with self.lock:
            return self.directory.add(kind, dn, attributes)

    def modify(self, dn: str, replace: dict[str, Values]) -> None:
        self._jitter()
        with self.lock:
            self.directory.modify(dn, replace)

    def move(self, dn: str, new_rdn: str, new_parent: str) -> str:
        self._jitter()
        with self.lock:
            return self.directory.move(dn, new_rdn, new_parent)

    def delete(self, dn: str) -> None:
        self._jitter()
        with self.lock:
            self.directory.delete(dn)

    def modify_members(self, group_dn: str, add: list[str], remove: list[str]) -> None:
        self._jitter()
        with self.lock:
            self.directory.modify_members(group_dn, add, remove)


class Pair:
    """Two fake directories and the state between them; ``writers`` per side (the autouse
    fixture below runs every test with one writer and with a pool of three)."""

    writers = 1

    def __init__(self, rules: Mapping | None = None, *, onprem_folds: bool = True) -> None:
        self.mapping = rules or mapping()
        self.onprem = FakeDirectory(ONPREM_ROOT, folds=onprem_folds)
        self.aws = FakeDirectory(AWS_ROOT)
        self.state = SyncState()
        self.clock = Clock()
        self.quarantine = Quarantine(initial_s=30, maximum_s=600, clock=self.clock)

    def pools(self) -> dict[Side, list[DirectoryWriter]] | None:
        if self.writers == 1:
            return None
        directories: dict[Side, FakeDirectory] = {"onprem": self.onprem, "aws": self.aws}
        pools: dict[Side, list[DirectoryWriter]] = {}
        for side, directory in directories.items():
            lock = threading.Lock()
            pools[side] = [Connection(directory, lock, seed) for seed in range(self.writers)]
        return pools

    def sync(
        self,
        *,
        allow_mass_delete: bool = False,
        save: bool = True,
        now: float | None = None,
        hold_deletes: tuple[Side, ...] = (),
        guard: DeleteGuard | None = None,
    ) -> CycleReport:
        state = self.state.model_copy(deep=True)
        report = Reconciler(
            self.mapping,
            state,
            {"onprem": self.onprem.snapshot(), "aws": self.aws.snapshot()},
            {"onprem": self.onprem, "aws": self.aws},
            allow_mass_delete=allow_mass_delete,
            pools=self.pools(),
            hold_deletes=hold_deletes,
            clock=(lambda: now) if now is not None else time.time,
            guard=guard,
            quarantine=self.quarantine,
        ).run()
        if save:
            self.state = state
        return report

    def converge(self) -> None:
        self.sync()
        assert self.sync().total_writes == 0


@pytest.fixture(autouse=True, params=[1, 3], ids=["one-writer", "three-writers"])
def writers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every test here runs with one writer per side and with a pool of three: the
    order guarantees and the outcome must be the same."""
    count: int = request.param
    monkeypatch.setattr(Pair, "writers", count)
    return count


def aws_dn(onprem_dn: str) -> str:
    return onprem_dn.replace(ONPREM_ROOT, AWS_ROOT)


class TestCreate:
    def test_user_created_on_aws_with_mapped_values(self) -> None:
        """An on-prem user appears in the AWS OU with its attributes and a rewritten UPN."""
        p = Pair()
        ou = p.onprem.ou("Sales")
        p.onprem.user(
            "Ann", ou, mail="ann@indutech.test", userPrincipalName="ann@corp.indutech.test"
        )
        p.sync()
        dn = make_dn("CN", "Ann", f"OU=Sales,{AWS_ROOT}")
        assert p.aws.get(dn, "mail") == "ann@indutech.test"
        assert p.aws.get(dn, "userPrincipalName") == "ann@aws.indutech.test"
        assert p.aws.get(dn, "userAccountControl") == "512"

    def test_user_created_on_aws_appears_on_prem(self) -> None:
        """The reverse direction: an AWS-side user is created on-prem."""
        p = Pair()
        p.aws.user("Bob", title="Engineer", userPrincipalName="bob@aws.indutech.test")
        p.sync()
        dn = make_dn("CN", "Bob", ONPREM_ROOT)
        assert p.onprem.get(dn, "title") == "Engineer"
        assert p.onprem.get(dn, "userPrincipalName") == "bob@corp.indutech.test"

    def test_hard_names_round_trip(self) -> None:
        """Commas, plus signs, quotes and non-ASCII letters in RDNs survive both ways."""
        p = Pair()
        ou = p.onprem.ou('Ops, "Nord"+Süd')
        p.onprem.user("Łukasz, O'Brien+1", ou, sam="lob1")
        p.aws.user('Zoë "Z" Ávila', sam="zza")
        p.converge()
        assert make_dn("CN", "Łukasz, O'Brien+1", make_dn("OU", 'Ops, "Nord"+Süd', AWS_ROOT)) in (
            p.aws.dns()
        )
        assert make_dn("CN", 'Zoë "Z" Ávila', ONPREM_ROOT) in p.onprem.dns()

    def test_children_wait_for_parents(self) -> None:
        """Deep trees are created parents first in one cycle."""
        p = Pair()
        parent = ONPREM_ROOT
        for level in range(5):
            parent = p.onprem.ou(f"L{level}", parent)
        p.onprem.user("Deep", parent)
        report = p.sync()
        assert aws_dn(make_dn("CN", "Deep", parent)) in p.aws.dns()
        assert report.deferred == 0


class TestModify:
    def test_change_each_way_then_silence(self) -> None:
        """A change on either side reaches the other; the next cycle writes nothing."""
        p = Pair()
        dn = p.onprem.user("Cy", department="R&D")
        p.converge()
        p.onprem.assign(dn, department="QA")
        p.aws.assign(aws_dn(dn), title="Lead")
        p.sync()
        assert p.aws.get(aws_dn(dn), "department") == "QA"
        assert p.onprem.get(dn, "title") == "Lead"
        assert p.sync().total_writes == 0

    def test_disable_and_clear(self) -> None:
        """Disabling (ACCOUNTDISABLE bit) and clearing a value propagate."""
        p = Pair()
        dn = p.onprem.user("Di", mail="di@x.test")
        p.converge()
        p.aws.assign(aws_dn(dn), userAccountControl="514", mail="")
        p.sync()
        assert p.onprem.get(dn, "userAccountControl") == "514"
        assert p.onprem.get(dn, "mail") is None

    @pytest.mark.parametrize("source", ["onprem", "aws"])
    def test_manager_reference_translated(self, source: str) -> None:
        """manager names the twin of the referenced user, whichever side created both."""
        p = Pair()
        here, there = (p.onprem, p.aws) if source == "onprem" else (p.aws, p.onprem)
        boss = here.user("Boss")
        dn = here.user("Emp", manager=boss)
        p.converge()
        swap = (ONPREM_ROOT, AWS_ROOT) if source == "onprem" else (AWS_ROOT, ONPREM_ROOT)
        assert there.get(dn.replace(*swap), "manager") == boss.replace(*swap)
        assert here.get(dn, "manager") == boss


class TestConflict:
    def test_authority_decides_deterministically(self) -> None:
        """Both sides change within a cycle: department goes on-prem's way, phone AWS's."""
        p = Pair()
        dn = p.onprem.user("Co", department="A", telephoneNumber="1")
        p.converge()
        p.onprem.assign(dn, department="onprem", telephoneNumber="2")
        p.aws.assign(aws_dn(dn), department="aws", telephoneNumber="3")
        with capture_logs() as logs:
            report = p.sync()
        assert report.conflicts == 2
        assert {e["attribute"] for e in logs if e["event"] == "identity_conflict"} == {
            "department",
            "telephoneNumber",
        }
        for directory, d in ((p.onprem, dn), (p.aws, aws_dn(dn))):
            assert directory.get(d, "department") == "onprem"
            assert directory.get(d, "telephoneNumber") == "3"
        assert p.sync().total_writes == 0


class TestStructure:
    def test_rename_and_move_each_way(self) -> None:
        """DN changes on either side move the twin; an OU rename carries its children."""
        p = Pair()
        a = p.onprem.ou("A")
        b = p.onprem.ou("B")
        user = p.onprem.user("Mover", a)
        p.converge()
        moved = p.onprem.rename(user, "CN=Mover\\, Jr.", b)
        p.sync()
        assert aws_dn(moved) in p.aws.dns()
        renamed_ou = p.aws.rename(aws_dn(a), "OU=A2")
        p.sync()
        assert "OU=A2," + ONPREM_ROOT in p.onprem.dns()
        assert renamed_ou in p.aws.dns()
        assert p.sync().total_writes == 0

    def test_move_into_new_ou(self) -> None:
        """A user moved into an OU created in the same cycle follows it."""
        p = Pair()
        user = p.onprem.user("U")
        p.converge()
        new = p.onprem.ou("New")
        p.onprem.rename(user, "CN=U", new)
        p.sync()
        assert aws_dn(make_dn("CN", "U", new)) in p.aws.dns()


class TestDelete:
    def test_delete_each_way(self) -> None:
        """A delete on one side removes the twin, children first."""
        p = Pair()
        ou = p.onprem.ou("Gone")
        user = p.onprem.user("X", ou)
        keep = p.onprem.user("Keep")
        p.converge()
        p.onprem.remove(user)
        p.onprem.remove(ou)
        p.sync()
        assert p.aws.dns() == {aws_dn(keep)}
        p.aws.remove(aws_dn(keep))
        p.sync()
        assert p.onprem.dns() == set()
        assert p.state.pairs == {}

    def test_threshold_holds_the_deletes_and_says_so(self) -> None:
        """Deleting a whole OU over the threshold deletes nothing and raises the guard."""
        p = Pair()
        ou = p.onprem.ou("Big")
        users = [p.onprem.user(f"U{i}", ou) for i in range(12)]
        p.onprem.user("Other")
        p.converge()
        for user in users:
            p.onprem.remove(user)
        p.onprem.remove(ou)
        with capture_logs() as logs:
            report = p.sync()
        assert report.guard_tripped == {"aws": 13}
        assert len(p.aws.dns()) == 14
        tripped = [e for e in logs if e["event"] == "deletion_guard_tripped"]
        assert tripped[0]["planned_deletes"] == 13
        assert tripped[0]["max_count"] == 10
        p.sync(allow_mass_delete=True)
        assert len(p.aws.dns()) == 1


class TestDeletePercent:
    def test_percentage_rule_alone_trips(self) -> None:
        """Under max_count but over max_percent of a side: the guard still holds the deletes,
        and only them."""
        p = Pair(
            mapping(
                deletion_guard={
                    "max_count": 50,
                    "max_percent": 10,
                    "min_objects_for_percent": 20,
                    "settle_s": 0,
                }
            )
        )
        users = [p.onprem.user(f"P{i}") for i in range(30)]
        p.converge()
        for user in users[:5]:
            p.onprem.remove(user)
        report = p.sync()
        assert report.guard_tripped == {"aws": 5}
        assert len(p.aws.dns()) == 30
        p.onprem.user("Late")
        report = p.sync()
        assert report.guard_tripped == {"aws": 5}  # the deletes stay held...
        assert report.writes["aws", "add"] == 1  # ...and every other change goes out
        assert len(p.aws.dns()) == 31


def window_mapping(**guard: Any) -> Mapping:
    rules: dict[str, Any] = {
        "max_count": 10,
        "max_percent": 50,
        "min_objects_for_percent": 1000,
        "settle_s": 0,
    }
    rules.update(window_s=3600, window_max_count=6, window_max_percent=None)
    rules.update(guard)
    return mapping(deletion_guard=rules)


class TestDeletionWindow:
    """The cumulative guard: deletes applied over the rolling window count with this cycle's."""

    @staticmethod
    def trickle(p: Pair, users: list[str], start: float, step: float = 60.0) -> list[CycleReport]:
        """Delete ``users`` on-prem two at a time, one cycle each, ``step`` seconds apart."""
        reports = []
        for i in range(0, len(users), 2):
            for user in users[i : i + 2]:
                p.onprem.remove(user)
            reports.append(p.sync(now=start + step * i / 2))
        return reports

    def test_trickle_is_stopped_once_the_window_is_full(self) -> None:
        """Two deletes a cycle pass the per-cycle limit (10), but the fourth pair would make
        8 in an hour (limit 6): no delete is written to that side, the log says what to do."""
        p = Pair(window_mapping())
        users = [p.onprem.user(f"T{i}") for i in range(8)]
        keep = p.onprem.user("Keep")
        p.converge()
        with capture_logs() as logs:
            reports = self.trickle(p, users, start=1_000_000.0)
        assert [r.guard_tripped for r in reports] == [{}, {}, {}, {"aws": 2}]
        assert reports[3].guard_rule == {"aws": "window"}
        assert [r.deletes_in_window["aws"] for r in reports] == [2, 4, 6, 6]
        assert len(p.aws.dns()) == 3  # the last two and Keep
        event = next(e for e in logs if e["event"] == "deletion_guard_tripped")
        assert (event["rule"], event["deleted_in_window"], event["window_max_count"]) == (
            "window",
            6,
            6,
        )
        assert "window_max_count" in event["action"]
        assert "--allow-mass-delete" in event["action"]
        p.onprem.assign(keep, title="Boss")
        report = p.sync(now=1_000_000.0 + 300)
        assert report.guard_tripped == {"aws": 2}
        assert p.aws.get(aws_dn(keep), "title") == "Boss"  # only the deletes are held
        assert len(p.aws.dns()) == 3

    def test_deletes_go_out_once_the_window_slides(self) -> None:
        """The held deletes are written when the older ones have left the window."""
        p = Pair(window_mapping())
        users = [p.onprem.user(f"S{i}") for i in range(8)]
        p.converge()
        start = 1_000_000.0
        self.trickle(p, users, start=start)
        assert p.sync(now=start + 3599).guard_tripped == {"aws": 2}
        report = p.sync(now=start + 3601)  # the first cycle's two deletes are out of it
        assert report.guard_tripped == {}
        assert report.writes["aws", "delete"] == 2
        assert report.deletes_in_window["aws"] == 6
        assert p.aws.dns() == set()

    def test_window_is_in_the_state(self) -> None:
        """The applied deletes are kept in the saved state (so a restart keeps the window),
        and entries older than the window are dropped from it."""
        p = Pair(window_mapping())
        users = [p.onprem.user(f"W{i}") for i in range(4)]
        p.converge()
        start = 1_000_000.0
        self.trickle(p, users, start=start)
        restored = SyncState.model_validate_json(p.state.model_dump_json())
        assert restored.deletes == {"aws": [(start, 2), (start + 60, 2)]}
        p.sync(now=start + 3630)
        assert p.state.deletes == {"aws": [(start + 60, 2)]}
        p.sync(now=start + 7200)
        assert p.state.deletes == {}

    def test_percent_of_the_side(self) -> None:
        """The window's percentage rule: 3 + 3 of 20 objects is 30 % > 25 %."""
        p = Pair(
            window_mapping(min_objects_for_percent=10, window_max_count=None, window_max_percent=25)
        )
        users = [p.onprem.user(f"P{i}") for i in range(20)]
        p.converge()
        for user in users[:3]:
            p.onprem.remove(user)
        assert p.sync(now=1000.0).guard_tripped == {}
        for user in users[3:6]:
            p.onprem.remove(user)
        report = p.sync(now=1060.0)
        assert report.guard_tripped == {"aws": 3}
        assert report.guard_rule == {"aws": "window"}

    def test_allow_mass_delete_passes_and_restarts_the_window(self) -> None:
        """An operator's --allow-mass-delete run writes the deletes and empties the window."""
        p = Pair(window_mapping())
        users = [p.onprem.user(f"A{i}") for i in range(10)]
        p.converge()
        self.trickle(p, users[:8], start=1000.0)
        report = p.sync(now=1300.0, allow_mass_delete=True)
        assert report.writes["aws", "delete"] == 2
        assert p.state.deletes == {}
        p.onprem.remove(users[8])
        assert p.sync(now=1400.0).writes["aws", "delete"] == 1


class TestDeleteHold:
    def test_deletes_wait_while_held_and_nothing_else_does(self) -> None:
        """A side whose deletes are held (the other side moved to another DC) keeps its
        objects; other writes go on, and the deletes go out once the hold ends."""
        p = Pair()
        gone = p.aws.user("Gone")
        p.converge()
        p.aws.remove(gone)
        p.aws.user("New")
        with capture_logs() as logs:
            report = p.sync(hold_deletes=("onprem",))
        assert report.deletes_held == {"onprem": 1}
        assert report.writes["onprem", "add"] == 1
        assert report.writes["onprem", "delete"] == 0
        assert any(e["event"] == "deletes_held_after_dc_change" for e in logs)
        assert p.sync().writes["onprem", "delete"] == 1


class TestDnHelpers:
    @pytest.mark.parametrize(
        ("dn", "expected"),
        [
            ("CN=Jo\\, Smith\\+1,OU=X", ("CN", "Jo, Smith+1", "OU=X")),
            ("cn=a\\c3\\a9\\2Cb,OU=X", ("CN", "aé,b", "OU=X")),
            ('CN=\\"Q\\" é,OU=Ü', ("CN", '"Q" é', "OU=Ü")),
        ],
    )
    def test_split_rdn_unescapes(self, dn: str, expected: tuple[str, str, str]) -> None:
        """RDN values come back unescaped, hex pairs decoded as UTF-8."""
        assert split_rdn(dn) == expected

    def test_normalize_matches_equivalent_spellings(self) -> None:
        """Case and escaping differences do not make two DNs different."""
        assert normalize_dn("cn=A\\2C B,ou=X") == normalize_dn("CN=a\\, b,OU=x")
        assert make_dn("CN", "a, b+c", "OU=X") == "CN=a\\, b\\+c,OU=X"


class TestMembership:
    def test_members_and_nested_groups_each_way(self) -> None:
        """Adds and removes on either side merge; a group inside a group is a member too."""
        p = Pair()
        u1, u2 = p.onprem.user("M1"), p.onprem.user("M2")
        inner = p.onprem.group("Inner", members=(u1,))
        outer = p.onprem.group("Outer", members=(inner, u2))
        p.converge()
        assert p.aws.members(aws_dn(outer)) == {aws_dn(inner), aws_dn(u2)}
        p.aws.modify_members(aws_dn(inner), [aws_dn(u2)], [aws_dn(u1)])
        p.onprem.modify_members(outer, [], [u2])
        p.sync()
        assert p.onprem.members(inner) == {u2}
        assert p.aws.members(aws_dn(outer)) == {aws_dn(inner)}
        assert p.sync().total_writes == 0


class TestLoopFree:
    def test_burst_then_writes_stop(self) -> None:
        """After a burst of changes on both sides, the write count stops growing."""
        p = Pair()
        users = [p.onprem.user(f"B{i}") for i in range(10)]
        p.converge()
        for i, user in enumerate(users):
            p.onprem.assign(user, title=f"t{i}")
            p.aws.assign(aws_dn(user), department=f"d{i}")
        p.sync()
        before = p.onprem.writes + p.aws.writes
        for _ in range(3):
            assert p.sync().total_writes == 0
        assert p.onprem.writes + p.aws.writes == before


class TestRecovery:
    def test_lost_state_adopts_instead_of_duplicating(self) -> None:
        """A cycle whose state was never saved (a crash) is redone without duplicates."""
        p = Pair()
        ou = p.onprem.ou("R")
        for i in range(5):
            p.onprem.user(f"R{i}", ou)
        p.sync(save=False)
        assert len(p.aws.dns()) == 6
        with capture_logs() as logs:
            report = p.sync()
        assert report.writes[("aws", "add")] == 0
        assert sum(e["event"] == "identity_object_adopted" for e in logs) == 6
        assert len(p.aws.dns()) == 6
        assert len(p.state.pairs) == 6

    def test_refused_write_is_retried(self) -> None:
        """A refused write keeps the old base, so the next cycle tries again."""
        p = Pair()
        dn = p.onprem.user("F")
        p.converge()
        p.onprem.assign(dn, title="new")
        p.aws.refuse = {normalize_dn(aws_dn(dn))}
        assert p.sync().failed == 1
        p.aws.refuse.clear()
        assert p.sync().total_writes == 0  # quarantined: it waits its backoff
        p.clock.now += 30
        p.sync()
        assert p.aws.get(aws_dn(dn), "title") == "new"


class TestDryRun:
    def test_dry_run_writes_nothing_and_lists_the_plan(self) -> None:
        """The dry-run writers only record what they would do."""
        p = Pair()
        p.onprem.user("D")
        writers: dict[Side, DryRunWriter] = {
            "onprem": DryRunWriter("onprem"),
            "aws": DryRunWriter("aws"),
        }
        with capture_logs() as logs:
            Reconciler(
                p.mapping,
                SyncState(),
                {"onprem": p.onprem.snapshot(), "aws": p.aws.snapshot()},
                dict[Side, DirectoryWriter](writers),
                dry_run=True,
            ).run()
        assert p.aws.dns() == set()
        assert [op for op, _, _ in writers["aws"].planned] == ["add"]
        assert any(e["event"] == "planned_change" for e in logs)


@pytest.mark.parametrize("attribute", ["unicodePwd", "userPassword"])
def test_password_attributes_refused(attribute: str) -> None:
    """A mapping that names a password attribute is invalid."""
    with pytest.raises(ValueError, match="password"):
        mapping(attributes={"x": {"onprem": attribute}})


class TestAudit:
    def test_every_write_has_a_record_without_values(self) -> None:
        """Each applied change yields one audit record naming attributes, never their values."""
        p = Pair()
        dn = p.onprem.user("Au", mail="secret-ish@x.test")
        g = p.onprem.group("AuG", members=(dn,))
        report = p.sync()
        assert len(report.changes) == report.total_writes
        assert {(c.side, c.op) for c in report.changes} == {("aws", "add")}
        assert "member" in next(c for c in report.changes if c.dn == aws_dn(g)).attributes
        assert all(c.object_guid for c in report.changes)
        assert "mail" in next(c for c in report.changes if c.dn == aws_dn(dn)).attributes
        assert "secret-ish" not in "".join(c.model_dump_json() for c in report.changes)
        assert len({c.event_id for c in report.changes}) == len(report.changes)
        del g

    def test_failed_membership_write_is_retried(self) -> None:
        """A refused member write leaves the base, so the next cycle writes it again."""
        p = Pair()
        u = p.onprem.user("Mu")
        g = p.onprem.group("MuG")
        p.converge()
        p.onprem.modify_members(g, [u], [])
        p.aws.refuse = {normalize_dn(aws_dn(g))}
        assert p.sync().failed == 1
        p.aws.refuse.clear()
        p.clock.now += 30  # its quarantine backoff
        assert p.sync().writes["aws", "members"] == 1
        assert p.aws.members(aws_dn(g)) == {aws_dn(u)}


class Incremental:
    """Two fake directories with mirrors kept between cycles, as the worker keeps them.
    After every cycle the state is saved as the worker saves it (a focused cycle: only the
    pairs its report names) and loaded back: what a restart would load must be the state."""

    def __init__(self) -> None:
        self.p = Pair()
        self.mirrors: dict[Side, Mirror] = {}
        self.objects = MemoryObjects()
        self.store = S3StateStore(self.objects, key="state.json")

    def full(self) -> CycleReport:
        self.mirrors = {
            "onprem": Mirror("onprem", self.p.mapping, self.p.onprem.snapshot()),
            "aws": Mirror("aws", self.p.mapping, self.p.aws.snapshot()),
        }
        return self._run(None)

    def batch(self, side: Side, *guids: str) -> CycleReport:
        """Re-read only ``guids`` on ``side`` (as read_changed does) and reconcile them."""
        fake = self.p.onprem if side == "onprem" else self.p.aws
        found = [o for o in fake.snapshot() if o.guid in guids]
        self.mirrors[side].apply(found, set(guids) - {o.guid for o in found})
        self.mirrors[side].settle(guids)
        return self._run({side: set(guids), other_side(side): set()})

    def _run(self, focus: dict[Side, set[str]] | None) -> CycleReport:
        report = Reconciler(
            self.p.mapping,
            self.p.state,
            self.mirrors,
            {"onprem": self.p.onprem, "aws": self.p.aws},
            focus=focus,
        ).run()
        asyncio.run(self._save_and_reload(report))
        return report

    async def _save_and_reload(self, report: CycleReport) -> None:
        await self.store.save(self.p.state, None if report.full else report.pairs_changed)
        assert await S3StateStore(self.objects, key="state.json").load() == self.p.state
        await self.store.flush()


def other_side(side: Side) -> Side:
    return "aws" if side == "onprem" else "onprem"


class TestIncrementalCycle:
    def test_batch_touches_only_its_objects(self) -> None:
        """A batch merges only its pairs; drift elsewhere waits for the full reconcile."""
        inc = Incremental()
        a = inc.p.onprem.user("A")
        b = inc.p.onprem.user("B")
        inc.full()
        inc.p.onprem.assign(a, title="batched")
        inc.p.onprem.assign(b, title="drifted")  # not reported: a missed change
        guid_a = inc.p.onprem.guid(a)
        assert guid_a is not None
        report = inc.batch("onprem", guid_a)
        assert report.merged == 1
        assert not report.full
        assert inc.p.aws.get(aws_dn(a), "title") == "batched"
        assert inc.p.aws.get(aws_dn(b), "title") is None
        assert inc.full().writes["aws", "modify"] == 1
        assert inc.p.aws.get(aws_dn(b), "title") == "drifted"

    def test_rename_keeps_references_through_guids(self) -> None:
        """A renamed user stays the manager and the member it was: references are GUIDs."""
        inc = Incremental()
        boss = inc.p.onprem.user("Boss")
        emp = inc.p.onprem.user("Emp", manager=boss)
        group = inc.p.onprem.group("G", members=(boss,))
        inc.full()
        renamed = inc.p.onprem.rename(boss, "CN=Boss2")
        guid = inc.p.onprem.guid(renamed)
        assert guid is not None
        inc.batch("onprem", guid)  # only the renamed user is reported, as AD does
        assert aws_dn(renamed) in inc.p.aws.dns()
        guid_emp = inc.p.onprem.guid(emp)
        assert guid_emp is not None
        inc.p.onprem.assign(emp, title="x")
        assert inc.batch("onprem", guid_emp).writes["aws", "modify"] == 1  # title only
        assert inc.p.aws.get(aws_dn(emp), "manager") == aws_dn(renamed)
        assert inc.p.aws.members(aws_dn(group)) == {aws_dn(renamed)}
        assert inc.full().total_writes == 0

    def test_new_member_reference_resolved_in_the_batch(self) -> None:
        """A user and the group it joins, reported together, arrive in one batch."""
        inc = Incremental()
        group = inc.p.onprem.group("G")
        inc.full()
        user = inc.p.onprem.user("New")
        inc.p.onprem.modify_members(group, [user], [])
        guids = [inc.p.onprem.guid(user), inc.p.onprem.guid(group)]
        report = inc.batch("onprem", *[g for g in guids if g is not None])
        assert inc.p.aws.members(aws_dn(group)) == {aws_dn(user)}
        assert report.retry == {"onprem": set(), "aws": set()}

    def test_ou_moved_carries_children_in_the_mirror(self) -> None:
        """An OU renamed on one side: its children follow in the mirror, nothing is duplicated."""
        inc = Incremental()
        ou = inc.p.aws.ou("Old")
        inc.p.aws.user("Kid", ou)
        inc.full()
        renamed = inc.p.aws.rename(ou, "OU=New")
        guid = inc.p.aws.guid(renamed)
        assert guid is not None
        inc.batch("aws", guid)
        assert make_dn("CN", "Kid", "OU=New," + ONPREM_ROOT) in inc.p.onprem.dns()
        assert inc.full().total_writes == 0
        assert len(inc.p.onprem.dns()) == 2


class TestStateJournal:
    @pytest.mark.parametrize("seed", range(12))
    def test_saved_state_is_the_state_after_any_change_sequence(self, seed: int) -> None:
        """Random changes by hand on either side (new, modified, renamed, moved, deleted
        users; memberships), each reported alone as DirSync or the USN would: after every
        cycle the journal entry of the pairs it names loads back to the whole state
        (``Incremental`` checks it), and a full cycle then changes nothing."""
        rng = random.Random(seed)
        inc = Incremental()
        ous = [inc.p.onprem.ou("A"), inc.p.onprem.ou("B")]
        users = [inc.p.onprem.user(f"U{i}", rng.choice([None, *ous])) for i in range(6)]
        inc.p.onprem.group("G", members=tuple(users[:2]))
        inc.full()
        made = 0
        for _ in range(25):
            side: Side = rng.choice(["onprem", "aws"])
            fake = inc.p.onprem if side == "onprem" else inc.p.aws
            root = ONPREM_ROOT if side == "onprem" else AWS_ROOT
            people = sorted(e.dn for e in fake.entries.values() if e.kind == "user")
            parents = [root, *sorted(e.dn for e in fake.entries.values() if e.kind == "ou")]
            group = next(e.dn for e in fake.entries.values() if e.kind == "group")
            op = rng.choice(["new", "title", "rename", "move", "delete", "member"])
            if op == "new" or not people:
                made += 1
                dn = fake.user(f"N{made}", rng.choice(parents))
            elif op == "title":
                dn = rng.choice(people)
                fake.assign(dn, title=f"t{rng.randrange(1000)}")
            elif op == "rename":
                dn = fake.rename(rng.choice(people), f"CN=R{rng.randrange(10**6)}")
            elif op == "move":
                picked = rng.choice(people)
                _, rdn, _ = split_rdn(picked)
                dn = fake.rename(picked, make_dn("CN", rdn, "X").split(",")[0], rng.choice(parents))
            elif op == "delete":
                dn = rng.choice(people)
                guid = fake.guid(dn)
                assert guid is not None
                fake.remove(dn)
                inc.batch(side, guid)
                continue
            else:
                dn = group
                member = rng.choice(people)
                if member in fake.members(group):
                    fake.modify_members(group, [], [member])
                else:
                    fake.modify_members(group, [member], [])
            guid = fake.guid(dn)
            assert guid is not None
            inc.batch(side, guid)
        inc.full()
        assert inc.full().total_writes == 0


def quarantined(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "identity_object_quarantined"]


class TestQuarantine:
    def test_refused_object_waits_its_backoff_and_the_rest_go_on(self) -> None:
        """A create the target refuses: the other objects arrive; the object is logged once
        with its DN and reason, audited, not tried again before its backoff, then released."""
        p = Pair()
        good = [p.onprem.user(f"Good {i}") for i in range(4)]
        poison = p.onprem.user("Poison")
        p.aws.refuse = {normalize_dn(aws_dn(poison))}
        with capture_logs() as logs:
            report = p.sync()
            assert {aws_dn(d) for d in good} <= p.aws.dns()
            again = p.sync()  # within the backoff: not tried, not logged again
            assert p.aws.refused == 1
            p.clock.now += 30
            p.sync()  # tried again: refused again, still logged once
            assert p.aws.refused == 2
        [event] = quarantined(logs)
        assert (event["side"], event["dn"], event["cause"]) == ("aws", poison, "refused")
        assert event["target_dn"] == aws_dn(poison)
        assert "refused" in event["reason"]
        assert event["retry_in_s"] == 30
        [record] = [c for c in report.changes if c.op == "quarantine"]
        assert (record.side, record.dn, record.object_guid) == (
            "aws",
            poison,
            p.onprem.guid(poison),
        )
        assert record.reason == event["reason"]
        assert [e.dn for e in report.quarantined] == [poison]
        assert again.quarantined == []
        assert p.quarantine.retry_in(str(p.onprem.guid(poison))) == 60
        p.aws.refuse.clear()
        p.clock.now += 60
        with capture_logs() as logs:
            released = p.sync()
        assert aws_dn(poison) in p.aws.dns()
        assert [e.dn for e in released.released] == [poison]
        assert [e["event"] for e in logs if "released" in e["event"]] == [
            "identity_object_released"
        ]
        assert not p.quarantine.held

    def test_held_pair_changes_nothing_until_due(self) -> None:
        """A pair whose modify was refused: its later changes wait too, other pairs go on."""
        p = Pair()
        held, free = p.onprem.user("Held"), p.onprem.user("Free")
        p.converge()
        p.aws.refuse = {normalize_dn(aws_dn(held))}
        p.onprem.assign(held, title="one")
        assert p.sync().failed == 1
        p.aws.refuse.clear()
        p.onprem.assign(held, title="two")
        p.onprem.assign(free, title="free")
        report = p.sync()
        assert report.writes["aws", "modify"] == 1
        assert p.aws.get(aws_dn(held), "title") is None
        assert p.aws.get(aws_dn(free), "title") == "free"
        p.clock.now += 30
        p.sync()
        assert p.aws.get(aws_dn(held), "title") == "two"

    def test_dn_that_does_not_parse_is_held_and_the_rest_go_on(self) -> None:
        """An object whose DN cannot be read is left out of the mirror and quarantined."""
        p = Pair()
        p.onprem.user("Fine")
        bad = DirObject(
            guid="b0000000-0000-4000-8000-000000000001",
            kind="user",
            dn=f"CN=semi;colon,{ONPREM_ROOT}",
            attributes={"samaccountname": ("bad",)},
        )
        with capture_logs() as logs:
            Reconciler(
                p.mapping,
                p.state,
                {"onprem": [*p.onprem.snapshot(), bad], "aws": p.aws.snapshot()},
                {"onprem": p.onprem, "aws": p.aws},
                quarantine=p.quarantine,
            ).run()
        assert make_dn("CN", "Fine", AWS_ROOT) in p.aws.dns()
        [event] = quarantined(logs)
        assert (event["side"], event["dn"], event["cause"]) == ("onprem", bad.dn, "invalid")
        assert "must be escaped" in event["reason"]

    def test_writes_before_a_lost_connection_are_audited(self) -> None:
        """The DC goes away mid-cycle: the cycle fails, and every write that reached the DC
        before is in the report's audit records (the worker publishes and counts them)."""
        p = Pair()
        users = [p.onprem.user(f"U{i}") for i in range(9)]
        p.aws.broken = {normalize_dn(aws_dn(users[4]))}
        reconciler = Reconciler(
            p.mapping,
            p.state,
            {"onprem": p.onprem.snapshot(), "aws": p.aws.snapshot()},
            {"onprem": p.onprem, "aws": p.aws},
            pools=p.pools(),
            quarantine=p.quarantine,
        )
        with pytest.raises(ConnectionResetError):
            reconciler.run()
        audited = {c.dn for c in reconciler.report.changes if c.op == "add"}
        assert audited == p.aws.dns()
        assert reconciler.report.writes["aws", "add"] == len(p.aws.dns())


class TestNameCollision:
    def test_names_ad_folds_to_one_name_both_source_objects(self) -> None:
        """Weiß and Weiss side by side on a directory that tells them apart: one is synced,
        the other is quarantined with a message naming both source objects."""
        p = Pair(onprem_folds=False)
        sharp = p.onprem.user("Weiß", sam="weiss1")
        plain = p.onprem.user("Weiss", sam="weiss2")
        with capture_logs() as logs:
            report = p.sync()
        assert p.aws.dns() == {aws_dn(plain)}  # the first by DN keeps the name
        [event] = quarantined(logs)
        assert (event["side"], event["dn"], event["cause"]) == ("aws", sharp, "collision")
        assert (event["collides_with"], event["target_dn"]) == (plain, "")
        assert sharp in event["reason"]
        assert plain in event["reason"]
        assert report.failed == 1
        p.clock.now += 30
        assert p.sync().total_writes == 0  # tried again, still the same verdict

    def test_children_of_the_held_ou_wait_and_never_land_in_the_other(self) -> None:
        """OU=Weiß and OU=Weiss, a user in each: the user of the held OU waits for its
        parent; it is not created in the other OU (lookups go by the exact spelling)."""
        p = Pair(onprem_folds=False)
        sharp = p.onprem.ou("Weiß")
        plain = p.onprem.ou("Weiss")
        p.onprem.user("In Sharp", sharp, sam="insharp")
        kept = p.onprem.user("In Plain", plain, sam="inplain")
        report = p.sync()
        assert p.aws.dns() == {aws_dn(plain), aws_dn(kept)}
        assert report.deferred == 1

    def test_the_object_already_synced_keeps_the_name(self) -> None:
        """Weiß synced first; Weiss created later is the one quarantined."""
        p = Pair(onprem_folds=False)
        sharp = p.onprem.user("Weiß", sam="weiss1")
        p.converge()
        plain = p.onprem.user("Weiss", sam="weiss2")
        with capture_logs() as logs:
            p.sync()
        [event] = quarantined(logs)
        assert (event["dn"], event["collides_with"]) == (plain, sharp)
        assert p.aws.dns() == {aws_dn(sharp)}

    def test_name_taken_on_the_target_names_both(self) -> None:
        """A user and a group of the same name, one on each side: neither is created over
        the other; each is quarantined naming the object that holds its name."""
        p = Pair()
        group = p.aws.group("Dup")
        user = p.onprem.user("Dup")
        with capture_logs() as logs:
            report = p.sync()
        events = {e["dn"]: e for e in quarantined(logs)}
        assert (events[user]["side"], events[user]["collides_with"]) == ("aws", group)
        assert (events[group]["side"], events[group]["collides_with"]) == ("onprem", user)
        assert "a group, not a user" in events[user]["reason"]
        assert report.total_writes == 0


class TestQuarantineBook:
    def test_backoff_doubles_to_its_maximum_and_a_change_wakes_it(self) -> None:
        """Pure bookkeeping: the wait doubles per failed try up to the maximum; a reported
        change makes the object due at once; gone objects are forgotten."""
        clock = Clock()
        book = Quarantine(initial_s=10, maximum_s=25, clock=clock)

        def held(reason: str = "r") -> Held:
            return Held(
                key="k",
                side="aws",
                dn="CN=x",
                source="onprem",
                object_guid="k",
                cause="refused",
                reason=reason,
                guids=frozenset({"k", "twin"}),
            )

        assert book.hold(held())
        assert book.waiting("k")
        assert book.holds("twin")
        assert not book.hold(held())  # same reason: not logged again
        assert book.retry_in("k") == 20
        assert book.hold(held("other"))  # a new reason is logged
        assert book.retry_in("k") == 25
        book.wake(["twin"])
        assert not book.waiting("k")
        assert [e.key for e in book.due()] == ["k"]
        book.forget(lambda guid: guid == "elsewhere")
        assert not book.held
