"""The harder cases against the real DCs: a 5,000-member group read in ranges, a DC restarted
mid-sync, and the deletion guard's alarm metric."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import ldap3
import pytest
from structlog.testing import capture_logs

from indutech_common.ldap import ldap_connect
from indutech_common.settings import LdapSettings
from indutech_identity_sync.model import make_dn
from indutech_identity_sync.sources.ldap import read_member_ranges
from indutech_identity_sync.state import MemoryStateStore
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.integration.identity_sync.conftest import Live
from tests.integration.identity_sync.test_incremental import wait_started
from tests.integration.identity_sync.test_worker import settings_for
from tests.support.metrics import sample
from tests.support.stack import REPO_ROOT, StackSettings, stack_service

BIG_GROUP = 5000


def ldapadd(settings: LdapSettings, ldif: str, directory: Path) -> subprocess.Popen[bytes]:
    """ldapadd of ``ldif`` to one DC over LDAPS, started in the background."""
    path = directory / f"{abs(hash(settings.url))}.ldif"
    path.write_text(ldif, encoding="utf-8")
    secret = directory / f"{abs(hash(settings.url))}.pw"
    secret.touch(mode=0o600)
    secret.write_text(settings.password.get_secret_value())
    env = {**os.environ, "LDAPTLS_CACERT": str(settings.ca_file), "LDAPTLS_REQCERT": "demand"}
    command = ["ldapadd", "-x", "-H", settings.url, "-D", settings.bind_dn, "-y", str(secret)]
    return subprocess.Popen(
        [*command, "-f", str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def user_ldif(root: str, count: int, tag: str) -> str:
    return "\n".join(
        f"dn: {make_dn('CN', f'Big {i}', root)}\nobjectClass: user\n"
        f"sAMAccountName: b{tag}{i}\nuserAccountControl: 512\n"
        for i in range(count)
    )


class TestBigGroup:
    # It writes and deletes 10,000 users: minutes of Samba time on 2 cores (far more on a
    # long-lived stack full of tombstones; `make stack-reset` gives fresh DCs), and the
    # DCs stay busy afterwards, so it runs after every other test.
    @pytest.mark.last
    @pytest.mark.slow
    @pytest.mark.timeout(900)  # minutes even on fresh DCs, most of them the cleanup
    def test_5000_members_read_in_ranges_and_synced(self, live: Live, tmp_path: Path) -> None:
        """A group of 5,000 members reaches the other side whole; Samba pages explicit
        ``member;range=`` requests, and our ranged reader follows the pages."""
        tag = live.unique[:6]
        jobs = [
            ldapadd(
                live.settings["onprem"], user_ldif(live.roots["onprem"], BIG_GROUP, tag), tmp_path
            ),
            ldapadd(
                live.settings["aws"], user_ldif(live.roots["aws"], BIG_GROUP, "a" + tag), tmp_path
            ),
        ]
        for job in jobs:
            _, err = job.communicate(timeout=300)
            assert job.returncode == 0, err[-500:]
        members = [make_dn("CN", f"Big {i}", live.roots["onprem"]) for i in range(BIG_GROUP)]
        group = live.group("onprem", "Everyone", members)
        report = live.sync()  # the users exist on both sides: adopted, then the group
        assert report.writes["aws", "add"] == 1
        twin = live.twin(group, "aws")

        ranged = ldap_connect(live.settings["aws"], auto_range=False, return_empty_attributes=False)
        try:
            ranged.search(twin, "(objectClass=*)", ldap3.BASE, attributes=["member;range=0-1499"])
            entry = next(e for e in ranged.response or [] if e["type"] == "searchResEntry")
            assert list(entry["raw_attributes"]) == ["member;range=0-1499"]  # a real page
            assert len(entry["raw_attributes"]["member;range=0-1499"]) == 1500
            got = read_member_ranges(ranged, twin, step=1500)
        finally:
            ranged.unbind()
        assert len(got) == len(set(got)) == BIG_GROUP
        assert {m.lower() for m in got} == {live.twin(m, "aws").lower() for m in members}

        live.members("aws", twin, [], [live.twin(m, "aws") for m in members[:2]])
        assert live.sync().writes["onprem", "members"] == 1
        assert live.sync().total_writes == 0
        c = ldap_connect(live.settings["onprem"], auto_range=False, return_empty_attributes=False)
        try:
            assert len(read_member_ranges(c, group, step=1500)) == BIG_GROUP - 2
        finally:
            c.unbind()


def samba_pid(name: str) -> int:
    return int((REPO_ROOT / ".stack" / "run" / f"samba-{name}.pid").read_text())


def stop_samba(name: str) -> None:
    """SIGTERM the DC's process group (as `stack down` does) and wait for it to go."""
    pid = samba_pid(name)
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)


def start_samba() -> None:
    """`stack up samba`: starts the DC that is down, leaves the running one alone."""
    stack_service("up", "samba", timeout_s=120)


@pytest.mark.serial  # stops the shared AWS DC: never beside other tests
class TestDcRestartedMidSync:
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    async def test_aws_dc_restart_then_converges(self, stack: StackSettings, live: Live) -> None:
        """The AWS DC stops mid-sync and comes back: the worker converges, no duplicate,
        and a change made while the DC was down arrives."""
        users = 200
        ou = await asyncio.to_thread(live.ou, "onprem", "Bulk")
        for i in range(users):
            await asyncio.to_thread(live.user, "onprem", f"Bulk {i}", ou)
        settings = settings_for(stack, live, "unused")
        worker = IdentitySyncWorker(settings, store=MemoryStateStore())
        stopped = False
        with capture_logs() as logs:
            task = asyncio.create_task(worker.serve(install_signal_handlers=False))
            try:
                while await asyncio.to_thread(live.count, "aws") < 20:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                await asyncio.to_thread(stop_samba, "aws")
                stopped = True
                first = make_dn("CN", "Bulk 0", ou)
                await asyncio.to_thread(live.assign, "onprem", first, title="while the DC was down")
                await asyncio.sleep(2.0)  # several failed cycles and reconnects
                await asyncio.to_thread(start_samba)
                stopped = False
                await asyncio.to_thread(live.reconnect, "aws")
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    done = await asyncio.to_thread(live.count, "aws") == users
                    if done and await asyncio.to_thread(
                        live.read, "aws", live.twin(first, "aws"), "title"
                    ) == ["while the DC was down"]:
                        break
                    await asyncio.sleep(0.2)
                await wait_started(worker, task)
            finally:
                if stopped:
                    await asyncio.to_thread(start_samba)
                    await asyncio.to_thread(live.reconnect, "aws")
                worker.request_exit()
                code = await asyncio.wait_for(task, 30)
        assert code == 0
        assert any(e["event"] == "cycle_failed" for e in logs), "the outage was not noticed"
        assert await asyncio.to_thread(live.count, "aws") == users
        names = await asyncio.to_thread(live.names, "aws")
        assert len(names) == len(set(names)) == users + 1  # the users and the OU, once each
        assert await asyncio.to_thread(live.read, "aws", live.twin(first, "aws"), "title") == [
            "while the DC was down"
        ]


class TestDeletionGuardAlarm:
    async def test_guard_metric_and_log_and_nothing_deleted(
        self, stack: StackSettings, live: Live
    ) -> None:
        """A whole OU deleted over the threshold: gauge 1 for that side, a log line, no delete."""
        live.write_mapping(max_count=5)
        ou = await asyncio.to_thread(live.ou, "onprem", "Doomed")
        for i in range(8):
            await asyncio.to_thread(live.user, "onprem", f"D{i}", ou)
        store = MemoryStateStore()
        settings = settings_for(stack, live, "unused")
        assert (
            await IdentitySyncWorker(settings, once=True, store=store).serve(
                install_signal_handlers=False
            )
            == 0
        )
        assert await asyncio.to_thread(live.count, "aws") == 8
        await asyncio.to_thread(live.delete, "onprem", ou)
        worker = IdentitySyncWorker(settings, once=True, store=store)
        with capture_logs() as logs:
            assert await worker.serve(install_signal_handlers=False) == 0
        gauge = sample(worker, "indutech_identity_sync_deletion_guard_tripped", side="aws")
        assert gauge == 1
        event = next(e for e in logs if e["event"] == "deletion_guard_tripped")
        assert (event["side"], event["planned_deletes"], event["max_count"]) == ("aws", 9, 5)
        assert await asyncio.to_thread(live.count, "aws") == 8
