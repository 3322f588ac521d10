"""identity-sync against the two real Samba DCs: each change, both ways, in scoped sub-OUs."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from indutech_identity_sync.config import Side
from indutech_identity_sync.model import make_dn
from indutech_identity_sync.sources.ldap import read_member_ranges
from tests.integration.identity_sync.conftest import Live

HARD_OU = 'Ops, "Nord"+Süd'
HARD_USER = "Łukasz, O'Brien+1"


def other(side: Side) -> Side:
    return "aws" if side == "onprem" else "onprem"


@pytest.mark.parametrize("source", ["onprem", "aws"])
class TestEachChangeEachWay:
    def test_create_modify_rename_move_disable_delete(self, live: Live, source: Side) -> None:
        """Every kind of change made on one side is visible on the other, then nothing more."""
        target = other(source)
        ou = live.ou(source, HARD_OU)
        boss = live.user(source, "Boss", ou)
        dn = live.user(source, HARD_USER, ou, mail="l@indutech.test", manager=boss)
        live.sync()
        twin = live.twin(dn, target)
        assert live.read(target, twin, "mail") == ["l@indutech.test"]
        assert live.read(target, twin, "manager") == [live.twin(boss, target)]

        live.assign(source, dn, title="Engineer", department="R&D")
        live.sync()
        assert live.read(target, twin, "title") == ["Engineer"]

        other_ou = live.ou(source, "Élan")
        moved = live.rename(source, dn, "CN=Łukasz\\, Jr.", other_ou)
        live.sync()
        assert not live.exists(target, twin)
        twin = live.twin(moved, target)
        assert live.read(target, twin, "title") == ["Engineer"]

        live.assign(source, moved, userAccountControl="514")
        live.sync()
        assert live.read(target, twin, "userAccountControl") == ["514"]

        live.delete(source, moved)
        live.sync()
        assert not live.exists(target, twin)
        assert live.sync().total_writes == 0

    def test_group_members_nested(self, live: Live, source: Side) -> None:
        """Members and nested groups follow adds and removes."""
        target = other(source)
        u1 = live.user(source, "M1, a")
        u2 = live.user(source, "M2+b")
        inner = live.group(source, "Inner é", [u1])
        outer = live.group(source, "Outer", [inner])
        live.sync()
        assert set(live.read(target, live.twin(outer, target), "member")) == {
            live.twin(inner, target)
        }
        assert live.read(target, live.twin(inner, target), "member") == [live.twin(u1, target)]
        live.members(source, inner, [u2], [u1])
        live.sync()
        assert live.read(target, live.twin(inner, target), "member") == [live.twin(u2, target)]
        assert live.sync().total_writes == 0


class TestConflict:
    def test_same_attribute_both_sides_resolved_by_authority(self, live: Live) -> None:
        """department: on-prem wins; telephoneNumber: AWS wins; the same each time."""
        dn = live.user("onprem", "Conflicted", department="A", telephoneNumber="1")
        live.sync()
        twin = live.twin(dn, "aws")
        live.assign("onprem", dn, department="from-onprem", telephoneNumber="2")
        live.assign("aws", twin, department="from-aws", telephoneNumber="3")
        report = live.sync()
        assert report.conflicts == 2
        for side, d in (("onprem", dn), ("aws", twin)):
            assert live.read(side, d, "department") == ["from-onprem"]  # type: ignore[arg-type]
            assert live.read(side, d, "telephoneNumber") == ["3"]  # type: ignore[arg-type]
        assert live.sync().total_writes == 0


class TestNoPingPong:
    def test_writes_stop_growing_after_a_burst(self, live: Live) -> None:
        """A burst on both sides costs one round of writes; later cycles write nothing."""
        users = [live.user("onprem", f"Burst {i}") for i in range(8)]
        first = live.sync()
        assert first.writes["aws", "add"] == 8
        for i, dn in enumerate(users):
            live.assign("onprem", dn, title=f"t{i}")
            live.assign("aws", live.twin(dn, "aws"), department=f"d{i}")
        burst = live.sync()
        assert burst.total_writes == 16
        totals = [live.sync().total_writes for _ in range(3)]
        assert totals == [0, 0, 0]


class TestDeletionThreshold:
    def test_whole_ou_delete_stops_at_threshold(self, live: Live) -> None:
        """Deleting an OU of 12 users over a threshold of 5 deletes nothing and says so."""
        live.write_mapping(max_count=5)
        ou = live.ou("onprem", "Doomed")
        for i in range(12):
            live.user("onprem", f"D{i}", ou)
        live.sync()
        assert live.count("aws") == 12
        live.delete("onprem", ou)
        with capture_logs() as logs:
            report = live.sync()
        assert report.guard_tripped == {"aws": 13}
        assert live.count("aws") == 12
        event = next(e for e in logs if e["event"] == "deletion_guard_tripped")
        assert event["planned_deletes"] == 13
        assert event["max_count"] == 5
        live.sync(allow_mass_delete=True)
        assert live.count("aws") == 0


class TestRangedMembers:
    def test_explicit_ranges_read_every_member(self, live: Live) -> None:
        """Asking member;range=0-1 pages (or Samba's whole answer) still yields every member."""
        users = [live.user("onprem", f"R{i}") for i in range(5)]
        group = live.group("onprem", "Ranged", users)
        members = read_member_ranges(live.connections["onprem"], group, step=2)
        assert sorted(members) == sorted(users)


class TestScope:
    def test_objects_outside_scope_untouched(self, live: Live) -> None:
        """Only the configured root is read: the sibling test OUs are never seen."""
        live.user("onprem", "Inside")
        report = live.sync()
        assert report.objects["onprem"] == 1
        assert make_dn("CN", "Inside", live.roots["aws"]) in [
            make_dn("CN", "Inside", live.roots["aws"])
        ]
        assert live.exists("aws", make_dn("CN", "Inside", live.roots["aws"]))
