"""Names nobody here wrote, against the real DCs: every RFC 4514 special character in an RDN,
leading and trailing spaces, non-ASCII, and two names AD folds to one (Weiß / Weiss)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from structlog.testing import capture_logs

from indutech_identity_sync.model import make_dn
from indutech_identity_sync.state import MemoryStateStore
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.integration.identity_sync.conftest import Live
from tests.integration.identity_sync.test_incremental import wait_started
from tests.integration.identity_sync.test_worker import settings_for, wait_until
from tests.support.directory import delete_subtree
from tests.support.metrics import sample
from tests.support.stack import StackSettings


class TestOddNames:
    def test_special_names_sync_both_ways_and_stay_quiet(self, live: Live) -> None:
        """`#` inside a CN, leading `#`, leading and trailing spaces, `,+"\\<>;=` and non-ASCII:
        created on the other side at the same name, references (member, manager) included."""
        ou = live.ou("onprem", "Nord #2 ")
        lead = live.user("onprem", "#Lead", ou)
        spaced = live.user("onprem", " Space Both ", ou)
        trail = live.user("onprem", "Trail ", ou)
        odd = live.user("onprem", 'a=b;c<d>e, "f"+g\\h', ou, manager=lead)
        group = live.group("onprem", "G1 #Top", [lead, spaced, trail], ou)
        back = live.user("aws", "Zoë #1 ")
        report = live.sync()
        assert report.failed == 0
        for dn in (ou, lead, spaced, trail, odd, group):
            assert live.exists("aws", live.twin(dn, "aws")), dn
        assert live.exists("onprem", live.twin(back, "onprem"))
        members = {m.lower() for m in live.read("aws", live.twin(group, "aws"), "member")}
        expected = {live.twin(d, "aws").lower() for d in (lead, spaced, trail)}
        assert members == expected
        manager = live.read("aws", live.twin(odd, "aws"), "manager")
        assert [m.lower() for m in manager] == [live.twin(lead, "aws").lower()]
        assert live.sync().total_writes == 0  # read back, our own names compare equal
        expected_dn = make_dn("CN", "G1 #Top", make_dn("OU", "Nord #2 ", live.roots["aws"]))
        assert live.exists("aws", expected_dn)


def quarantined(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == "identity_object_quarantined"]


def held(worker: IdentitySyncWorker, side: str) -> float:
    """indutech_identity_sync_quarantined{side}: objects waiting now."""
    name = "indutech_identity_sync_quarantined"
    return sample(worker, name, side=side) or 0.0


def entered(worker: IdentitySyncWorker, side: str, cause: str) -> float:
    """indutech_identity_sync_quarantine_events_total{side, cause}."""
    name = "indutech_identity_sync_quarantine_events_total"
    return sample(worker, name, side=side, cause=cause) or 0.0


def add_blocker(live: Live, parent: str, sam: str) -> str:
    """An AWS user outside the synced OU whose sAMAccountName an on-prem user also has."""
    connection = live.connections["aws"]
    live.ok("aws", connection.add(parent, ["organizationalUnit"]))
    dn = make_dn("CN", "Blocker", parent)
    live.ok("aws", connection.add(dn, ["user"], {"sAMAccountName": sam}))
    return dn


class TestCaseFoldCollision:
    async def test_weiss_and_weiss_one_synced_the_other_named(
        self, stack: StackSettings, live: Live
    ) -> None:
        """Samba holds CN=Weiß and CN=Weiss side by side; AD takes them for one name. One is
        synced, the other quarantined with a message naming both on-prem objects, counted."""
        sharp = await asyncio.to_thread(live.user, "onprem", "Weiß")
        plain = await asyncio.to_thread(live.user, "onprem", "Weiss")
        worker = IdentitySyncWorker(
            settings_for(stack, live, "unused"), once=True, store=MemoryStateStore()
        )
        with capture_logs() as logs:
            assert await worker.serve(install_signal_handlers=False) == 0
        assert await asyncio.to_thread(live.names, "aws") == [live.twin(plain, "aws")]
        [event] = quarantined(logs)
        assert (event["side"], event["dn"], event["collides_with"]) == ("aws", sharp, plain)
        assert sharp in event["reason"]
        assert plain in event["reason"]
        assert event["target_dn"] == ""  # no target that does not exist is named
        assert held(worker, "aws") == 1
        assert entered(worker, "aws", "collision") == 1


class TestPoisonObject:
    async def test_poison_is_quarantined_and_the_good_ones_arrive(
        self, stack: StackSettings, live: Live, unique: str
    ) -> None:
        """A user the AWS DC refuses (its sAMAccountName is taken there, outside the synced
        OU), next to good ones and odd names, in continuous mode: the good ones arrive, the
        poison is logged once, audited and counted; once fixed, a change to it brings it
        over at once, without waiting its backoff (600 s here)."""
        blocker_ou = f"OU=isync-{unique}-x,OU=AWS,{stack.ad_aws.base_dn}"
        taken = live.sam("p")
        try:
            blocker = await asyncio.to_thread(add_blocker, live, blocker_ou, taken)
            poison = await asyncio.to_thread(live.user, "onprem", "Poison", sAMAccountName=taken)
            good = [await asyncio.to_thread(live.user, "onprem", f"Good {i}") for i in range(3)]
            group = await asyncio.to_thread(live.group, "onprem", "G1 #Top", [good[0]])
            settings = settings_for(stack, live, "unused").model_copy(
                update={"quarantine_backoff_initial_s": 600.0}
            )
            worker = IdentitySyncWorker(settings, store=MemoryStateStore())
            with capture_logs() as logs:
                task = asyncio.create_task(worker.serve(install_signal_handlers=False))
                try:
                    await wait_started(worker, task)
                    twins = [live.twin(dn, "aws") for dn in [*good, group]]
                    await wait_until(lambda: all(live.exists("aws", t) for t in twins))
                    late = await asyncio.to_thread(live.user, "onprem", "Late #1 ")
                    await wait_until(lambda: live.exists("aws", live.twin(late, "aws")))
                    assert not await asyncio.to_thread(live.exists, "aws", live.twin(poison, "aws"))
                    assert held(worker, "aws") == 1
                    # the fix: the name is freed on AWS, then the poison changes on-prem
                    await asyncio.to_thread(live.connections["aws"].delete, blocker)
                    await asyncio.to_thread(live.assign, "onprem", poison, title="fixed")
                    await wait_until(lambda: live.exists("aws", live.twin(poison, "aws")), 20)
                    await wait_until(lambda: held(worker, "aws") == 0)
                finally:
                    worker.request_exit()
                    assert await asyncio.wait_for(task, 30) == 0
        finally:
            await asyncio.to_thread(delete_subtree, stack.ad_aws, blocker_ou)
        [event] = quarantined(logs)
        assert (event["side"], event["dn"], event["cause"]) == ("aws", poison, "refused")
        assert event["target_dn"] == live.twin(poison, "aws")
        assert not any(e["event"] == "cycle_failed" for e in logs)
        assert [e["dn"] for e in logs if e["event"] == "identity_object_released"] == [poison]
        assert entered(worker, "aws", "refused") == 1


class TestDryRunExitCode:
    async def test_dry_run_that_cannot_plan_everything_exits_non_zero(
        self, stack: StackSettings, live: Live
    ) -> None:
        """A dry run with an object it cannot plan (a name collision) exits 1 and says so."""
        await asyncio.to_thread(live.user, "onprem", "Weiß")
        await asyncio.to_thread(live.user, "onprem", "Weiss")
        settings = settings_for(stack, live, "unused").model_copy(update={"dry_run": True})
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        with capture_logs() as logs:
            assert await worker.serve(install_signal_handlers=False) == 1
        assert [e["quarantined"] for e in logs if e["event"] == "dry_run_incomplete"] == [1]
        assert await asyncio.to_thread(live.names, "aws") == []

    async def test_dry_run_whose_cycle_fails_exits_non_zero(
        self, stack: StackSettings, live: Live
    ) -> None:
        """A dry run whose cycle fails (here the DC refuses the user filter) exits 1."""
        mapping = live.mapping_file.read_text()
        live.mapping_file.write_text(f'user_filter = "(objectClass=user"\n{mapping}')
        settings = settings_for(stack, live, "unused").model_copy(update={"dry_run": True})
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        with capture_logs() as logs:
            assert await worker.serve(install_signal_handlers=False) == 1
        events = [e["event"] for e in logs]
        assert "cycle_failed" in events
        assert "single_run_failed" in events
