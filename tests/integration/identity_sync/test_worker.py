"""The identity-sync worker end to end: change signals, S3 state, a SIGKILL mid-sync."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import ldap3
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from indutech_common.kafka import create_consumer, start_client
from indutech_common.s3 import JsonObjectStore, create_s3_client
from indutech_common.schemas import Topics
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import SIDES, IdentitySyncSettings, Side
from indutech_identity_sync.metrics import IdentitySyncMetrics
from indutech_identity_sync.model import guid_text
from indutech_identity_sync.sources.changes import ChangeFeed
from indutech_identity_sync.sources.ldap import ChangeNotifier, highest_usn
from indutech_identity_sync.state import MemoryStateStore, S3StateStore, SyncState
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.integration.identity_sync.conftest import Live
from tests.support.kafka import temporary_topics
from tests.support.metrics import sample
from tests.support.stack import REPO_ROOT, StackSettings


def settings_for(stack: StackSettings, live: Live, state_key: str) -> IdentitySyncSettings:
    return IdentitySyncSettings(
        onprem=stack.ad_onprem,
        aws=stack.ad_aws,
        s3=stack.s3,
        mapping_file=live.mapping_file,
        state_bucket=stack.s3.backup_bucket,
        state_key=state_key,
        poll_interval_s=0.2,
        health={"host": "127.0.0.1", "port": 0},
    )


def env_for(stack: StackSettings, live: Live, state_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INDUTECH_", "IDENTITY_"))}
    for side, ldap in (("ONPREM", stack.ad_onprem), ("AWS", stack.ad_aws)):
        env[f"IDENTITY_SYNC_{side}__URL"] = ldap.url
        env[f"IDENTITY_SYNC_{side}__BIND_DN"] = ldap.bind_dn
        env[f"IDENTITY_SYNC_{side}__PASSWORD"] = ldap.password.get_secret_value()
        env[f"IDENTITY_SYNC_{side}__BASE_DN"] = ldap.base_dn
        env[f"IDENTITY_SYNC_{side}__CA_FILE"] = str(ldap.ca_file)
    s3 = stack.s3
    assert s3.access_key_id is not None
    assert s3.secret_access_key is not None
    env.update(
        {
            "IDENTITY_SYNC_S3__ENDPOINT_URL": str(s3.endpoint_url),
            "IDENTITY_SYNC_S3__REGION": s3.region,
            "IDENTITY_SYNC_S3__ACCESS_KEY_ID": s3.access_key_id.get_secret_value(),
            "IDENTITY_SYNC_S3__SECRET_ACCESS_KEY": s3.secret_access_key.get_secret_value(),
            "IDENTITY_SYNC_S3__KMS_KEY_ID": str(s3.kms_key_id),
            "IDENTITY_SYNC_S3__CA_FILE": str(s3.ca_file),
            "IDENTITY_SYNC_STATE_BUCKET": s3.backup_bucket,
            "IDENTITY_SYNC_STATE_KEY": state_key,
            "IDENTITY_SYNC_MAPPING_FILE": str(live.mapping_file),
            "IDENTITY_SYNC_HEALTH__PORT": "0",
            "IDENTITY_SYNC_HEALTH__HOST": "127.0.0.1",
        }
    )
    return env


# the first cycle: a full reconcile after the DirSync drain, which grows with the domain's
# history (11 s on a long-lived test domain, more under a loaded run)
START_S = 60


async def wait_until(check: Callable[[], bool], timeout_s: float = 10) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await asyncio.to_thread(check):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    pytest.fail(f"condition not met within {timeout_s} s")


def adds(worker: IdentitySyncWorker, side: str) -> float:
    """indutech_identity_sync_writes_total{side, op="add"} as /metrics shows it."""
    return sample(worker, "indutech_identity_sync_writes_total", side=side, op="add") or 0.0


async def delete_state(stack: StackSettings, key: str) -> None:
    """The snapshot and every journal entry after it."""
    async with create_s3_client(stack.s3) as client:
        objects = JsonObjectStore(client, bucket=stack.s3.backup_bucket)
        for journal_key in await objects.list_keys(f"{key}.journal/"):
            await objects.delete(journal_key)
        await client.delete_object(Bucket=stack.s3.backup_bucket, Key=key)


async def saved_state(stack: StackSettings, key: str) -> SyncState:
    """The state as a restarted worker would load it: the snapshot and its journal."""
    async with create_s3_client(stack.s3) as client:
        store = S3StateStore(JsonObjectStore(client, bucket=stack.s3.backup_bucket), key=key)
        try:
            return await store.load()
        finally:
            await store.close()


class TestLiveWorker:
    async def test_changes_each_way_are_picked_up_by_the_signals(
        self, stack: StackSettings, live: Live, unique: str
    ) -> None:
        """DirSync (on-prem) and the USN poll (AWS, tombstones too) wake a cycle; state in S3."""
        key = f"identity-sync-tests/{unique}/state.json"
        worker = IdentitySyncWorker(settings_for(stack, live, key))
        task = asyncio.create_task(worker.serve(install_signal_handlers=False))
        try:
            await wait_until(lambda: worker.last_report is not None or task.done(), START_S)
            assert not task.done(), task.result()
            dn = await asyncio.to_thread(live.user, "onprem", "Live One")
            await wait_until(lambda: live.exists("aws", live.twin(dn, "aws")))
            aws_dn = await asyncio.to_thread(live.user, "aws", "Live Two")
            await wait_until(lambda: live.exists("onprem", live.twin(aws_dn, "onprem")))
            await asyncio.to_thread(live.delete, "aws", aws_dn)
            await wait_until(lambda: not live.exists("onprem", live.twin(aws_dn, "onprem")))
            writes = adds(worker, "aws")
            assert writes >= 1
            await asyncio.sleep(1.0)  # several idle polls: our own writes echo as no-ops
            assert adds(worker, "aws") == writes
        finally:
            worker.request_exit()
            assert await asyncio.wait_for(task, 15) == 0
        state = await saved_state(stack, key)
        await delete_state(stack, key)
        assert len(state.pairs) == 1
        assert state.onprem.dirsync_cookie_hex


# notifications on, the USN probe and the poll once a minute: only a notification can
# bring a change within seconds
KINDS = ("lookup", "scan")  # of the change watch's searches
NOTIFIED_ONLY = {"poll_interval_s": 60.0, "probe_interval_s": 60.0, "change_notifications": True}
# A quarter of the 60 s poll: a twin made within it was made by the change signal, not by
# the poll. That is a cause, not a speed: the < 5 s latency is measured by `make bench`
# (identity_sync_propagation_p50/p99), never by a clock in a test.
SIGNAL_BOUND_S = 15


class TestChangeNotification:
    async def test_notification_wakes_the_worker_long_before_the_poll(
        self, stack: StackSettings, live: Live
    ) -> None:
        """With notifications on and the probe and the poll once a minute, a change on
        either side still arrives within seconds, and the watch searched for nothing."""
        settings = settings_for(stack, live, "unused").model_copy(update=NOTIFIED_ONLY)
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        task = asyncio.create_task(worker.serve(install_signal_handlers=False))
        try:
            await wait_until(lambda: worker.last_report is not None or task.done(), START_S)
            assert not task.done(), task.result()
            await asyncio.sleep(0.3)  # the echo of the start-up cycle, if any
            searched = [searches(worker, s, k) for s in ("onprem", "aws") for k in KINDS]
            aws_dn = await asyncio.to_thread(live.user, "aws", "Notified")
            await wait_until(
                lambda: live.exists("onprem", live.twin(aws_dn, "onprem")), SIGNAL_BOUND_S
            )
            dn = await asyncio.to_thread(live.user, "onprem", "Notified Too")
            await wait_until(lambda: live.exists("aws", live.twin(dn, "aws")), SIGNAL_BOUND_S)
        finally:
            worker.request_exit()
            assert await asyncio.wait_for(task, 15) == 0
        # no probe ran meanwhile (the first ran at start), so no search
        assert [searches(worker, s, k) for s in ("onprem", "aws") for k in KINDS] == searched

    async def test_notified_change_is_applied_by_its_own_cycle(
        self, stack: StackSettings, live: Live
    ) -> None:
        """A notified change on either side is applied by one incremental cycle of its own
        (the objects named re-read, nothing searched), within seconds."""
        settings = settings_for(stack, live, "unused").model_copy(update=NOTIFIED_ONLY)
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        with capture_logs() as logs:
            task = asyncio.create_task(worker.serve(install_signal_handlers=False))
            try:
                await wait_until(lambda: worker.last_report is not None or task.done(), START_S)
                assert not task.done(), task.result()
                await asyncio.sleep(0.3)  # the echo of the start-up cycle, if any
                dn = await asyncio.to_thread(live.user, "onprem", "Fast Path")
                await wait_until(lambda: live.exists("aws", live.twin(dn, "aws")), SIGNAL_BOUND_S)
                aws_dn = await asyncio.to_thread(live.user, "aws", "Fast Back")
                await wait_until(
                    lambda: live.exists("onprem", live.twin(aws_dn, "onprem")), SIGNAL_BOUND_S
                )
            finally:
                worker.request_exit()
                assert await asyncio.wait_for(task, 15) == 0
        cycles = [e for e in logs if e["event"] == "cycle_done"]
        assert cycles[0]["full"]
        applied = [c for c in cycles[1:] if c["writes"]]
        assert len(applied) == 2, cycles
        assert not any(c["full"] for c in applied), applied
        assert all("search_s" in c and "read_s" in c for c in applied), applied
        assert adds(worker, "aws") == adds(worker, "onprem") == 1


def guid_of(live: Live, side: Side, dn: str) -> str:
    connection = live.connections[side]
    connection.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["objectGUID"])
    entry = next(e for e in connection.response or [] if e.get("type") == "searchResEntry")
    return guid_text(entry["raw_attributes"]["objectGUID"][0])


def searches(worker: IdentitySyncWorker, side: str, kind: str) -> float:
    """indutech_identity_sync_change_searches_total{side, kind} as /metrics shows it."""
    return sample(worker, "indutech_identity_sync_change_searches_total", side=side, kind=kind) or 0


class TestUsnWatch:
    async def test_change_applied_from_the_usn_alone(
        self, stack: StackSettings, live: Live
    ) -> None:
        """With notifications off and a 60 s poll, a change on either side still arrives
        within seconds: the probe saw the DC's USN move and the lookup found the object
        (no scan of the domain after the start)."""
        settings = settings_for(stack, live, "unused").model_copy(
            update={"poll_interval_s": 60.0, "change_notifications": False}
        )
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        task = asyncio.create_task(worker.serve(install_signal_handlers=False))
        try:
            await wait_until(lambda: worker.last_report is not None or task.done(), START_S)
            assert not task.done(), task.result()
            dn = await asyncio.to_thread(live.user, "onprem", "Probed")
            await wait_until(lambda: live.exists("aws", live.twin(dn, "aws")), SIGNAL_BOUND_S)
            aws_dn = await asyncio.to_thread(live.user, "aws", "Probed Back")
            await wait_until(
                lambda: live.exists("onprem", live.twin(aws_dn, "onprem")), SIGNAL_BOUND_S
            )
        finally:
            worker.request_exit()
            assert await asyncio.wait_for(task, 15) == 0
        assert adds(worker, "aws") == adds(worker, "onprem") == 1
        for side in ("onprem", "aws"):
            assert searches(worker, side, "lookup") >= 1
            assert searches(worker, side, "scan") == 0

    @pytest.mark.parametrize("lookup_max", [1000, 0])
    def test_nothing_searched_while_the_usn_stands(
        self, stack: StackSettings, live: Live, lookup_max: int
    ) -> None:
        """A probe that finds the USN where the last search left it searches nothing; one
        that finds it moved searches (a lookup, or with lookups off the DirSync / uSNChanged
        scan) and reports the changed object. The DCs are shared with other tests, so the
        quiet probe is one with the same USN read just before and just after it."""
        registry = CollectorRegistry()
        metrics = IdentitySyncMetrics("identity-sync", registry)
        settings: dict[Side, LdapSettings] = {"onprem": stack.ad_onprem, "aws": stack.ad_aws}
        feed = ChangeFeed(live.mapping, settings, metrics=metrics)
        feed.open({side: settings[side].url for side in SIDES})
        try:
            state = SyncState()
            feed.prime(state, lambda *_: pytest.fail("no DC change expected"))

            def count(name: str, **labels: str) -> float:
                value = registry.get_sample_value(name, {"worker": "identity-sync", **labels})
                return value or 0.0

            def searched() -> float:
                return sum(
                    count("indutech_identity_sync_change_searches_total", side=s, kind=k)
                    for s in SIDES
                    for k in ("lookup", "scan")
                )

            quiet = False
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                before = {s: highest_usn(live.connections[s])[1] for s in SIDES}
                feed.tick()  # catches up with whatever moved before
                feed.collect(state, {s: {} for s in SIDES})
                probes, done = (
                    count("indutech_identity_sync_change_probes_total", side="aws"),
                    searched(),
                )
                feed.tick()
                after = {s: highest_usn(live.connections[s])[1] for s in SIDES}
                if before == after:
                    quiet = True
                    assert searched() == done, "a search although no USN moved"
                    assert (
                        count("indutech_identity_sync_change_probes_total", side="aws")
                        == probes + 1
                    )
                    break
            assert quiet, "the DCs never stood still for one probe in 60 s (a bulk load?)"
            feed.usn_lookup_max = lookup_max  # the catching up above looked up (cheap)
            kind = "lookup" if lookup_max else "scan"
            for side in SIDES:
                usn_before = highest_usn(live.connections[side])[1]
                dn = live.user(side, f"Watched {side}")
                guid = guid_of(live, side, dn)
                before_side = count(
                    "indutech_identity_sync_change_searches_total", side=side, kind=kind
                )
                assert feed.tick()
                assert (
                    count("indutech_identity_sync_change_searches_total", side=side, kind=kind)
                    == before_side + 1
                )
                found = feed.collect(state, {s: {} for s in SIDES})
                assert guid in found[side]
                # the cursor handed to the state covers the change
                cursor = state.onprem if side == "onprem" else state.aws
                assert cursor.highest_usn > usn_before
        finally:
            feed.close_connections()


class DroppingProxy:
    """Forwards one connection to a DC; ``drop()`` ends it as a restarting DC would."""

    def __init__(self, host: str, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, args=(host, port), daemon=True).start()

    def _accept(self, host: str, port: int) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            upstream = socket.create_connection((host, port))
            self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)

    def drop(self) -> None:
        """Reset the connection (RST, as from a DC killed mid-session)."""
        for sock in [*self.sockets, self.listener]:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


class TestNotifierThread:
    """The change notifier's receiver thread ends with its connection, and never spins."""

    @pytest.mark.parametrize("ending", ["close", "dc_goes_away"])
    def test_receiver_thread_ends_with_the_connection(
        self, stack: StackSettings, live: Live, ending: str
    ) -> None:
        dc = urlsplit(stack.ad_onprem.url)
        assert dc.hostname is not None
        proxy = DroppingProxy(dc.hostname, dc.port or 636)
        # The stack certificate names 127.0.0.1 too, so verification stays on.
        # A short connect timeout makes ldap_connect's receive timeout 2 s, so a thread
        # that survived its connection would have timed out and spun within the wait.
        settings = stack.ad_onprem.model_copy(
            update={"url": f"ldaps://127.0.0.1:{proxy.port}", "connect_timeout_s": 0.5}
        )
        notifier = ChangeNotifier(settings, live.roots["onprem"], lambda _guid, _dn: None)
        try:
            receiver = notifier.connection.strategy.receiver
            assert notifier.listening
            if ending == "close":
                notifier.close()
            else:
                # ldap3 took the TLS error of a vanished peer for a receive timeout and
                # retried recv forever: one thread at 100 % CPU per DC restart.
                proxy.drop()
            receiver.join(timeout=5)
            assert not receiver.is_alive(), "the receiver thread outlived its connection"
            assert not notifier.listening
        finally:
            notifier.close()  # idempotent
            proxy.drop()

    def test_a_failing_callback_does_not_end_the_listener(
        self, stack: StackSettings, live: Live
    ) -> None:
        """ldap3 ends its receiver thread at a callback's exception: every later change
        went unnotified until the process restarted. The failure is logged; the next
        change is still notified."""
        seen: list[str] = []
        failing = threading.Event()
        failing.set()
        arrived = threading.Event()

        def on_change(_guid: str, dn: str) -> None:
            if failing.is_set():
                failing.clear()
                raise RuntimeError("the hand-over failed")
            seen.append(dn)
            arrived.set()

        first = live.user("onprem", "NotifyFirst")
        second = live.user("onprem", "NotifySecond")
        notifier = ChangeNotifier(stack.ad_onprem, live.roots["onprem"], on_change)
        try:
            with capture_logs() as logs:
                live.assign("onprem", first, title="one")
                deadline = time.monotonic() + 30
                while notifier.callback_failures == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                live.assign("onprem", second, title="two")
                assert arrived.wait(timeout=30), "no notification after the failed one"
            assert notifier.listening
            assert notifier.callback_failures == 1
            failed = [e for e in logs if e["event"] == "change_notification_callback_failed"]
            assert len(failed) == 1
            assert failed[0]["error_type"] == "RuntimeError"
            assert second.lower() in [dn.lower() for dn in seen]
        finally:
            notifier.close()


class TestDryRun:
    async def test_dry_run_prints_the_plan_and_writes_nothing(
        self, stack: StackSettings, live: Live
    ) -> None:
        """--dry-run: one cycle, each planned change logged, no object created, no state saved."""
        dn = await asyncio.to_thread(live.user, "onprem", "Planned")
        settings = settings_for(stack, live, "unused").model_copy(update={"dry_run": True})
        store = MemoryStateStore()
        worker = IdentitySyncWorker(settings, store=store)
        with capture_logs() as logs:
            assert await worker.serve(install_signal_handlers=False) == 0
        planned = [e for e in logs if e["event"] == "planned_change"]
        assert [(e["side"], e["op"], e["dn"]) for e in planned] == [
            ("aws", "add", live.twin(dn, "aws"))
        ]
        assert not await asyncio.to_thread(live.exists, "aws", live.twin(dn, "aws"))
        assert store.saves == 0


class TestAuditTopic:
    async def test_applied_changes_published_keyed_by_guid(
        self, stack: StackSettings, live: Live, unique: str
    ) -> None:
        """One --once cycle publishes one record per applied change to the audit topic."""
        topic = f"test.identity-changes.{unique}"
        async with temporary_topics(stack.kafka, {topic: Topics.IDENTITY_CHANGES}):
            dn = await asyncio.to_thread(live.user, "onprem", "Audited", mail="a@x.test")
            settings = settings_for(stack, live, "unused").model_copy(
                update={"audit_kafka": stack.kafka, "audit_topic": topic}
            )
            worker = IdentitySyncWorker(settings, once=True, store=MemoryStateStore())
            assert await worker.serve(install_signal_handlers=False) == 0
            assert worker.last_report is not None
            expected = worker.last_report.total_writes
            records = await consume(stack, topic, expected)
        assert expected == 1
        record = json.loads(records[0][1])
        assert record["op"] == "add"
        assert record["dn"] == live.twin(dn, "aws")
        assert records[0][0] == record["object_guid"].encode()
        assert "a@x.test" not in records[0][1].decode()


async def consume(stack: StackSettings, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = create_consumer(stack.kafka, topic, group_id=None)
    await start_client(consumer, stack.kafka)
    found: list[tuple[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + 20
        while len(found) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            found += [(m.key or b"", m.value or b"") for rs in batches.values() for m in rs]
    finally:
        await consumer.stop()
    return found


class TestKilledMidSync:
    def test_sigkill_then_rerun_converges_without_duplicates(
        self, stack: StackSettings, live: Live, unique: str
    ) -> None:
        """SIGKILL mid-sync; the next run adopts what exists, adds the rest, loses nothing."""
        users = 150
        ou = live.ou("onprem", "Bulk")
        dns = [live.user("onprem", f"Bulk {i}", ou) for i in range(users)]
        key = f"identity-sync-tests/{unique}/state.json"
        env = env_for(stack, live, key)
        command = [sys.executable, "-m", "indutech_identity_sync.cli", "--once"]
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while live.count("aws") < 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=10)
        at_kill = live.count("aws")
        assert 0 < at_kill < users, "the kill did not land mid-sync"
        # a change made while the worker is down, to an object it already copied
        live.assign("onprem", dns[0], title="changed while down")
        try:
            rerun = subprocess.run(
                command,
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert rerun.returncode == 0, rerun.stderr[-2000:]
            third = subprocess.run(
                command,
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            asyncio.run(delete_state(stack, key))
        assert live.count("aws") == users
        sams = live.connections["aws"]
        sams.search(live.roots["aws"], "(objectClass=user)", ldap3.SUBTREE, attributes=["cn"])
        names = [e["dn"] for e in sams.response or [] if e.get("type") == "searchResEntry"]
        assert len(names) == len(set(names)) == users
        assert live.read("aws", live.twin(dns[0], "aws"), "title") == ["changed while down"]
        cycles = [
            json.loads(line)
            for line in third.stdout.splitlines()
            if line.startswith("{") and '"cycle_done"' in line
        ]
        assert [c["writes"] for c in cycles] == [0]


class TestConfig:
    def test_bad_mapping_fails_at_start_naming_the_field(
        self, stack: StackSettings, live: Live, tmp_path: Path
    ) -> None:
        """A mapping without sAMAccountName stops the CLI with exit 2 and names the problem."""
        bad = tmp_path / "bad.toml"
        bad.write_text(
            f'onprem_root = "{live.roots["onprem"]}"\n[attributes.mail]\nonprem = "mail"\n'
        )
        env = env_for(stack, live, "unused")
        env["IDENTITY_SYNC_MAPPING_FILE"] = str(bad)
        done = subprocess.run(
            [sys.executable, "-m", "indutech_identity_sync.cli", "--once"],
            cwd=REPO_ROOT,
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert "aws_root" in done.stderr
        assert stack.ad_onprem.password.get_secret_value() not in done.stderr + done.stdout
