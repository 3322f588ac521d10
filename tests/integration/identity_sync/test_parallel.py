"""Parallel writers (several LDAPS connections per DC) keep the order of one writer, on the
real DCs: parents before children, users in the add of their group, memberships after both,
references once their targets exist, and no retry left over."""

from __future__ import annotations

import asyncio
import socket

import pytest
from structlog.testing import capture_logs

from indutech_identity_sync.config import Side
from indutech_identity_sync.state import MemoryStateStore
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.integration.identity_sync.conftest import Live
from tests.integration.identity_sync.test_worker import settings_for, wait_until
from tests.support.stack import StackSettings

PER_LEVEL = 6


def twins(live: Live, dns: list[str], side: Side) -> set[str]:
    return {live.twin(dn, side).lower() for dn in dns}


def members(live: Live, side: Side, group: str) -> set[str]:
    return {dn.lower() for dn in live.read(side, group, "member")}


@pytest.mark.parametrize("writers", [1, 4])
class TestParallelWriters:
    def test_nested_tree_converges_in_one_cycle_with_the_same_writes(
        self, live: Live, writers: int
    ) -> None:
        """Three nested OUs, users on every level, groups whose members sit above, at and
        below them (nested groups too) and managers both ways, created in one full cycle
        with ``writers`` connections per DC, and new objects on the AWS side in the same
        cycle. The result and the write counts are those of one writer: groups get the
        users created before them in their add (one membership write only where a member
        lies deeper), no write is refused, nothing is deferred or left to retry."""
        l1 = live.ou("onprem", "L1")
        l2 = live.ou("onprem", "L2", l1)
        l3 = live.ou("onprem", "L3", l2)
        level: dict[int, list[str]] = {}
        for depth, parent in ((1, None), (2, l1), (3, l2), (4, l3)):
            level[depth] = [
                live.user("onprem", f"P{depth}-{i}", parent, mail=f"p{depth}.{i}@x.test")
                for i in range(PER_LEVEL)
            ]
        live.assign("onprem", level[4][0], manager=level[1][3])  # a reference up the tree
        live.assign("onprem", level[1][4], manager=level[4][1])  # and one down
        early = level[1] + level[2] + level[3]  # created before a group in L2 (depth 3)
        g_early = live.group("onprem", "G early", early, l2)
        g_inner = live.group("onprem", "G inner", [*level[4], level[1][0]], l3)
        g_late = live.group("onprem", "G late", [*level[4], g_inner, level[1][1]])
        g_mid = live.group("onprem", "G mid", [g_early, g_late, level[2][0]], l1)
        team = live.ou("aws", "Team")
        aws_users = [live.user("aws", f"A-{i}", team) for i in range(4)]
        aws_group = live.group("aws", "A group", aws_users, team)

        report = live.sync(writers=writers)

        assert report.failed == 0
        assert report.deferred == 0
        assert report.retry == {"onprem": set(), "aws": set()}
        assert dict(report.writes) == {
            ("aws", "add"): 3 + 4 * PER_LEVEL + 4,
            ("aws", "members"): 2,  # G late and G mid: members below them
            ("aws", "modify"): 2,  # the two managers
            ("onprem", "add"): 1 + 4 + 1,
        }
        assert members(live, "aws", live.twin(g_early, "aws")) == twins(live, early, "aws")
        assert members(live, "aws", live.twin(g_inner, "aws")) == twins(
            live, [*level[4], level[1][0]], "aws"
        )
        assert members(live, "aws", live.twin(g_late, "aws")) == twins(
            live, [*level[4], g_inner, level[1][1]], "aws"
        )
        assert members(live, "aws", live.twin(g_mid, "aws")) == twins(
            live, [g_early, g_late, level[2][0]], "aws"
        )
        assert members(live, "onprem", live.twin(aws_group, "onprem")) == twins(
            live, aws_users, "onprem"
        )
        assert live.read("aws", live.twin(level[4][0], "aws"), "manager") == [
            live.twin(level[1][3], "aws")
        ]
        assert live.read("aws", live.twin(level[1][4], "aws"), "manager") == [
            live.twin(level[4][1], "aws")
        ]
        assert live.read("aws", live.twin(level[3][2], "aws"), "mail") == ["p3.2@x.test"]
        assert live.sync(writers=writers).total_writes == 0


class TestWriterConnections:
    async def test_dropped_writer_connections_are_renewed_not_a_failed_cycle(
        self, stack: StackSettings, live: Live
    ) -> None:
        """A DC closes idle LDAP connections (AD after MaxConnIdleTime): the worker's extra
        writer connections, idle between bursts, are checked and opened again before they
        write, so a burst after a quiet spell propagates without a failed cycle."""
        settings = settings_for(stack, live, "unused")
        assert settings.writer_concurrency > 1
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        task = asyncio.create_task(worker.serve(install_signal_handlers=False))
        try:
            with capture_logs() as logs:
                await wait_until(lambda: worker.last_report is not None or task.done(), 30)
                assert not task.done(), task.result()
                links = [worker.links[side] for side in ("onprem", "aws")]  # the worker's order
                for link in links:
                    link.lock.acquire()  # no cycle meanwhile: the burst arrives as one batch
                try:
                    for link in links:  # as a DC that dropped the idle connections
                        assert len(link.writers) == settings.writer_concurrency - 1
                        for connection in link.writers:
                            connection.socket.shutdown(socket.SHUT_RDWR)
                        link.writers_used = 0.0
                    dns = [live.user("onprem", f"Burst {i}") for i in range(6)]
                finally:
                    for link in links:
                        link.lock.release()
                twins = [live.twin(dn, "aws") for dn in dns]
                await wait_until(lambda: all(live.exists("aws", dn) for dn in twins), 20)
        finally:
            worker.request_exit()
            assert await asyncio.wait_for(task, 15) == 0
        events = [e["event"] for e in logs]
        assert [e for e in logs if e["event"] == "cycle_failed"] == []
        assert events.count("writer_connection_renewed") >= settings.writer_concurrency - 1
