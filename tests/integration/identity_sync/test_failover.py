"""DC failover and the cumulative deletion guard against the real DCs.

The local stack has one DC per domain, so a second DC is simulated: a dead address (nothing
listens on it) or a TCP proxy in front of the real DC that is closed mid-run, listed before
the real DC's own address.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from indutech_common.schemas import Topics
from indutech_common.settings import LdapSettings
from indutech_identity_sync.model import make_dn
from indutech_identity_sync.state import MemoryStateStore
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.integration.identity_sync.conftest import Live
from tests.integration.identity_sync.test_incremental import total_writes, wait_started
from tests.integration.identity_sync.test_worker import adds, consume, settings_for
from tests.support.kafka import temporary_topics
from tests.support.metrics import sample
from tests.support.proxy import pipe
from tests.support.stack import StackSettings


def dead_url() -> str:
    """An LDAPS URL on 127.0.0.1 where nothing listens (connections refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ldaps://127.0.0.1:{port}"


def with_dcs(settings: LdapSettings, *urls: str) -> LdapSettings:
    return LdapSettings.model_validate(
        {**settings.model_dump(exclude={"url", "urls"}), "urls": list(urls)}
    )


class Proxy:
    """A TCP forwarder to one DC that can be closed, cutting every connection through it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"ldaps://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        """Stop listening and reset every connection (the DC 'dies')."""
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def audit_topic(stack: StackSettings, unique: str) -> AsyncIterator[str]:
    """An audit topic of this test with the contract's settings, deleted afterwards."""
    topic = f"test.identity-changes.{unique}"
    async with temporary_topics(stack.kafka, {topic: Topics.IDENTITY_CHANGES}):
        yield topic


@pytest.fixture
async def aws_proxy(stack: StackSettings) -> AsyncIterator[Proxy]:
    """A proxy to the AWS DC, listed before the DC's own URL."""
    target = urlsplit(stack.ad_aws.url)
    proxy = Proxy(target.hostname or "", target.port or 636)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def run_until(task: asyncio.Task[int], done: Callable[[], bool]) -> None:
    """Until ``done()`` (checked in a thread) holds, the worker ``task`` still running."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert not task.done(), task.result()
        if await asyncio.to_thread(done):
            return
        await asyncio.sleep(0.1)
    pytest.fail("no convergence within 120 s")


class TestDcFailover:
    @pytest.mark.timeout(180)
    async def test_first_onprem_dc_dead_second_used(self, stack: StackSettings, live: Live) -> None:
        """The first on-prem URL refuses connections: the worker says dc_failover, works on
        the second, converges both ways, and its own writes echo as nothing."""
        for i in range(5):
            await asyncio.to_thread(live.user, "onprem", f"Dead {i}")
        aws_user = await asyncio.to_thread(live.user, "aws", "From AWS")
        dead = dead_url()
        settings = settings_for(stack, live, "unused").model_copy(
            update={"onprem": with_dcs(stack.ad_onprem, dead, stack.ad_onprem.url)}
        )
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        with capture_logs() as logs:
            task = asyncio.create_task(worker.serve(install_signal_handlers=False))
            try:
                await wait_started(worker, task)
                await run_until(task, lambda: live.count("aws") == 6)
                late = await asyncio.to_thread(live.user, "onprem", "Late")
                await run_until(task, lambda: live.exists("aws", live.twin(late, "aws")))
                # the AWS user's way back may still be in flight (slow under load): wait for
                # it, so that the idle ticks below measure echoes and nothing else
                await run_until(task, lambda: live.exists("onprem", live.twin(aws_user, "onprem")))
                # and counted: the twin is visible a moment before its add is in the metric
                await run_until(task, lambda: adds(worker, "aws") + adds(worker, "onprem") == 7)
                await asyncio.sleep(1.0)  # idle ticks: nothing more to write
                assert (adds(worker, "aws"), adds(worker, "onprem")) == (6, 1)
            finally:
                worker.request_exit()
                assert await asyncio.wait_for(task, 30) == 0
        event = next(e for e in logs if e["event"] == "dc_failover")
        assert (event["side"], event["from_dc"], event["to_dc"]) == (
            "onprem",
            dead,
            stack.ad_onprem.url,
        )
        assert await asyncio.to_thread(live.exists, "onprem", live.twin(aws_user, "onprem"))
        assert (adds(worker, "aws"), adds(worker, "onprem")) == (6, 1)  # each object once
        assert sample(worker, "indutech_identity_sync_dc", side="onprem", url=dead) == 0

    @pytest.mark.slow
    @pytest.mark.timeout(240)
    async def test_aws_dc_lost_mid_sync_moves_to_the_next(
        self, stack: StackSettings, live: Live, aws_proxy: Proxy, audit_topic: str
    ) -> None:
        """The AWS DC in use (through a proxy) goes away while users are being created: the
        worker moves to the next DC, reconciles in full there and converges with no object
        created twice; a change made meanwhile arrives. The adds of the failed cycle that
        reached the DC are counted and published to the audit topic like any other."""
        users = 120
        ou = await asyncio.to_thread(live.ou, "onprem", "Bulk")
        for i in range(users):
            await asyncio.to_thread(live.user, "onprem", f"Bulk {i}", ou)
        settings = settings_for(stack, live, "unused").model_copy(
            update={
                "aws": with_dcs(stack.ad_aws, aws_proxy.url, stack.ad_aws.url),
                "audit_kafka": stack.kafka,
                "audit_topic": audit_topic,
            }
        )
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        with capture_logs() as logs:
            task = asyncio.create_task(worker.serve(install_signal_handlers=False))
            try:
                await run_until(task, lambda: live.count("aws") >= 20)
                await aws_proxy.close()
                first = make_dn("CN", "Bulk 0", ou)
                await asyncio.to_thread(live.assign, "onprem", first, title="after the failover")
                await run_until(
                    task,
                    lambda: (
                        live.count("aws") == users
                        and live.read("aws", live.twin(first, "aws"), "title")
                        == ["after the failover"]
                    ),
                )
                await wait_started(worker, task)
            finally:
                worker.request_exit()
                assert await asyncio.wait_for(task, 30) == 0
        failover = [e for e in logs if e["event"] == "dc_failover"]
        assert [(e["side"], e["from_dc"], e["to_dc"]) for e in failover] == [
            ("aws", aws_proxy.url, stack.ad_aws.url)
        ]
        assert any(e["event"] == "cycle_failed" for e in logs)
        names = await asyncio.to_thread(live.names, "aws")
        assert len(names) == len(set(names)) == users + 1  # the users and the OU, once each
        # an add whose answer was lost with the proxy is adopted, never written again; every
        # other object on AWS was added once, counted once and published once, the adds of
        # the failed cycle included
        adopted = sum(e["event"] == "identity_object_adopted" for e in logs)
        assert adopted <= settings.writer_concurrency
        assert adds(worker, "aws") + adopted == users + 1
        assert adds(worker, "onprem") == 0
        written = int(total_writes(worker))  # every op of both sides: one record each
        records = [json.loads(value) for _, value in await consume(stack, audit_topic, written)]
        assert len(records) == written
        published = [r["dn"] for r in records if (r["side"], r["op"]) == ("aws", "add")]
        assert len(published) == len(set(published)) == adds(worker, "aws")
        assert sample(worker, "indutech_identity_sync_dc", side="aws", url=stack.ad_aws.url) == 1
        assert sample(worker, "indutech_identity_sync_dc_failovers_total", side="aws") == 1


class TestDeletionWindow:
    async def test_trickle_stopped_across_runs(self, stack: StackSettings, live: Live) -> None:
        """Deletes in separate runs (a restart between them, same state) add up: with a
        window of 3, two deletes go out, the next two trip the guard (gauge, log)."""
        live.write_mapping(max_count=50, window_max_count=3)
        dns = [await asyncio.to_thread(live.user, "onprem", f"Trickle {i}") for i in range(5)]
        store = MemoryStateStore()
        settings = settings_for(stack, live, "unused")

        async def run_once() -> IdentitySyncWorker:
            worker = IdentitySyncWorker(settings, once=True, store=store)
            assert await worker.serve(install_signal_handlers=False) == 0
            return worker

        await run_once()
        assert await asyncio.to_thread(live.count, "aws") == 5
        for dn in dns[:2]:
            await asyncio.to_thread(live.delete, "onprem", dn)
        worker = await run_once()
        assert await asyncio.to_thread(live.count, "aws") == 3
        assert sample(worker, "indutech_identity_sync_deletes_in_window", side="aws") == 2
        for dn in dns[2:4]:
            await asyncio.to_thread(live.delete, "onprem", dn)
        with capture_logs() as logs:
            worker = await run_once()
        assert await asyncio.to_thread(live.count, "aws") == 3
        assert sample(worker, "indutech_identity_sync_deletion_guard_tripped", side="aws") == 1
        event = next(e for e in logs if e["event"] == "deletion_guard_tripped")
        assert (event["rule"], event["planned_deletes"], event["deleted_in_window"]) == (
            "window",
            2,
            2,
        )
