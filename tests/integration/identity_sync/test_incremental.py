"""The running worker applies each change batch by itself: every kind of change, both ways,
through DirSync / the USN poll and incremental cycles, with no full re-read after the start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from indutech_identity_sync.config import Side
from indutech_identity_sync.state import MemoryStateStore
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.integration.identity_sync.conftest import Live
from tests.integration.identity_sync.test_worker import settings_for
from tests.support.stack import StackSettings

ACCEPTED_S = 5.0  # the latency the seed accepts; the benchmark measures the real figure


async def wait_started(worker: IdentitySyncWorker, task: asyncio.Task[int]) -> None:
    """Until the start-up reconcile is done (or the worker died)."""
    deadline = time.monotonic() + 60
    while worker.last_report is None and not task.done() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls two conditions
        await asyncio.sleep(0.05)
    assert not task.done(), task.result()
    assert worker.last_report is not None


def total_writes(worker: IdentitySyncWorker) -> float:
    """indutech_identity_sync_writes summed over sides and operations."""
    return sum(
        sample.value
        for family in worker.metrics.registry.collect()
        if family.name == "indutech_identity_sync_writes"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def other(side: Side) -> Side:
    return "aws" if side == "onprem" else "onprem"


async def arrives(check: Callable[[], bool], latencies: list[float]) -> None:
    started = time.monotonic()
    while time.monotonic() - started < 15:
        if await asyncio.to_thread(check):
            latencies.append(time.monotonic() - started)
            return
        await asyncio.sleep(0.02)
    pytest.fail("the change did not reach the other side within 15 s")


async def scripted_changes(live: Live, source: Side, lat: list[float]) -> None:
    """Each kind of change on ``source``, waiting for it on the other side."""
    target = other(source)
    run = asyncio.to_thread
    ou = await run(live.ou, source, 'Ops, "Nord"+Süd')
    dn = await run(live.user, source, "Łukasz, O'Brien+1", ou, mail="l@x.test")
    twin = live.twin(dn, target)
    await arrives(lambda: live.exists(target, twin), lat)

    await run(live.assign, source, dn, title="Engineer")
    await arrives(lambda: live.read(target, twin, "title") == ["Engineer"], lat)

    renamed = await run(live.rename, source, dn, "CN=Łukasz\\, Jr.", ou)
    twin = live.twin(renamed, target)
    await arrives(lambda: live.exists(target, twin), lat)

    elsewhere = await run(live.ou, source, "Élan")
    moved = await run(live.rename, source, renamed, "CN=Łukasz\\, Jr.", elsewhere)
    twin = live.twin(moved, target)
    await arrives(lambda: live.exists(target, twin), lat)

    await run(live.assign, source, moved, userAccountControl="514")
    await arrives(lambda: live.read(target, twin, "userAccountControl") == ["514"], lat)

    other_user = await run(live.user, source, "Member+2")
    group = await run(live.group, source, "Team é", [moved])
    g_twin = live.twin(group, target)
    await arrives(lambda: live.exists(target, g_twin), lat)
    await arrives(lambda: live.read(target, g_twin, "member") == [twin], lat)
    await run(live.members, source, group, [other_user], [moved])
    want = [live.twin(other_user, target)]
    await arrives(lambda: live.read(target, g_twin, "member") == want, lat)

    renamed_ou = await run(live.rename, source, elsewhere, "OU=Élan 2", live.roots[source])
    twin = live.twin(f"CN=Łukasz\\, Jr.,{renamed_ou}", target)
    await arrives(lambda: live.exists(target, twin), lat)

    await run(live.delete, source, renamed_ou)
    await arrives(lambda: not live.exists(target, twin), lat)


@pytest.mark.parametrize("source", ["onprem", "aws"])
class TestIncrementalEachWay:
    @pytest.mark.timeout(120)
    async def test_each_change_applied_by_its_batch(
        self, stack: StackSettings, live: Live, source: Side
    ) -> None:
        """Create, modify, rename, move, disable, members, delete: each arrives, no full read."""
        settings = settings_for(stack, live, "unused").model_copy(
            update={"reconcile_interval_s": 3600.0}
        )
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        lat: list[float] = []
        with capture_logs() as logs:
            task = asyncio.create_task(worker.serve(install_signal_handlers=False))
            try:
                await wait_started(worker, task)

                await scripted_changes(live, source, lat)
                await asyncio.sleep(1.0)  # the echoes of our own writes
                writes = total_writes(worker)
                await asyncio.sleep(1.5)
                assert total_writes(worker) == writes
            finally:
                worker.request_exit()
                code = await asyncio.wait_for(task, 15)
        problems = [e for e in logs if e.get("log_level") in ("warning", "error", "critical")]
        assert code == 0, problems
        cycles = [e for e in logs if e["event"] == "cycle_done"]
        assert cycles[0]["full"] is True
        assert all(c["full"] is False for c in cycles[1:]), "a change batch caused a full read"
        assert max(c["merged"] for c in cycles[1:]) <= 6  # only the changed objects' pairs
        assert max(lat) < ACCEPTED_S, lat
