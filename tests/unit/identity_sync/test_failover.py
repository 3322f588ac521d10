"""DC failover: the settings that list several DCs, the choice of DC with its backoff, and the
worker moving a side to the next DC that answers (connections faked, no directory needed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from indutech_common.errors import DependencyUnavailableError
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import IdentitySyncSettings
from indutech_identity_sync.errors import IdentitySyncError
from indutech_identity_sync.failover import DcPool
from indutech_identity_sync.links import Link
from indutech_identity_sync.sources import changes as changes_module
from indutech_identity_sync.state import CookieState, SyncState
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.support.metrics import sample

EXAMPLE = Path(__file__).resolve().parents[3] / "services/identity-sync/mapping.example.toml"
DC1, DC2, DC3 = "ldaps://dc1:636", "ldaps://dc2:636", "ldaps://dc3:636"


def ldap(**fields: Any) -> dict[str, Any]:
    return {"bind_dn": "CN=sync", "password": "pw", "base_dn": "DC=corp", **fields}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestSettings:
    def test_url_alone_is_one_dc(self) -> None:
        """The single-DC form keeps working: url is the only DC."""
        settings = LdapSettings.model_validate(ldap(url=DC1))
        assert settings.dc_urls == (DC1,)

    def test_comma_separated_urls_in_order(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """IDENTITY_SYNC_ONPREM__URLS takes a comma-separated list; url is its first DC."""
        monkeypatch.setenv("IDENTITY_SYNC_ONPREM__URLS", f"{DC2}, {DC1}")
        for name, value in ldap().items():
            monkeypatch.setenv(f"IDENTITY_SYNC_ONPREM__{name.upper()}", value)
            monkeypatch.setenv(f"IDENTITY_SYNC_AWS__{name.upper()}", value)
        monkeypatch.setenv("IDENTITY_SYNC_AWS__URL", DC3)
        monkeypatch.setenv("IDENTITY_SYNC_MAPPING_FILE", str(EXAMPLE))
        monkeypatch.setenv("IDENTITY_SYNC_S3__SSE", "AES256")
        settings = IdentitySyncSettings()
        assert settings.onprem.dc_urls == (DC2, DC1)
        assert settings.onprem.url == DC2
        assert settings.aws.dc_urls == (DC3,)
        assert settings.onprem.for_dc(DC1).dc_urls == (DC1,)

    @pytest.mark.parametrize(
        ("fields", "message"),
        [
            ({"urls": f"{DC1},ldap://dc2:389"}, "only ldaps://"),
            ({"urls": f"{DC1},{DC1}"}, "twice"),
            ({"url": DC2, "urls": [DC1, DC2]}, "disagree"),
            ({"url": "ldap://dc1"}, "ldaps"),
        ],
    )
    def test_bad_lists_refused(self, fields: dict[str, Any], message: str) -> None:
        """Plain LDAP, a DC listed twice, or url not the first of urls stop the worker."""
        with pytest.raises(ValidationError, match=message):
            LdapSettings.model_validate(ldap(**fields))


class TestDcPool:
    def test_first_answering_dc_and_stickiness(self) -> None:
        """DCs are tried in order; once on one, it is tried first again after a reconnect."""
        pool = DcPool([DC1, DC2, DC3], clock=Clock())
        assert pool.candidates() == [DC1, DC2, DC3]
        pool.failed(DC1, "refused")
        assert pool.connected(DC2) == DC1  # a failover from the first choice
        assert pool.reason(DC1) == "refused"
        pool.disconnected()
        assert pool.candidates() == [DC2, DC3]  # DC1 still waits its backoff
        assert pool.connected(DC2) is None  # the same DC again: no failover

    def test_backoff_doubles_up_to_the_maximum_and_resets(self) -> None:
        """A DC that keeps failing waits 1, 2, 4 … s (at most the maximum) before the next
        try; an answer resets it."""
        clock = Clock()
        pool = DcPool([DC1], backoff_initial_s=1, backoff_max_s=5, clock=clock)
        waits = []
        for _ in range(5):
            assert pool.candidates() == [DC1]
            waits.append(pool.failed(DC1, "down"))
            assert pool.candidates() == []
            assert pool.retry_in() == waits[-1]
            clock.now += waits[-1]
        assert waits == [1, 2, 4, 5, 5]
        pool.connected(DC1)
        assert pool.failed(DC1, "down again") == 1

    def test_all_waiting_means_nothing_to_try(self) -> None:
        """With every DC in its backoff nothing is tried until the first wait ends."""
        clock = Clock()
        pool = DcPool([DC1, DC2], backoff_initial_s=2, clock=clock)
        pool.failed(DC1, "x")
        clock.now += 1
        pool.failed(DC2, "y")
        assert pool.candidates() == []
        assert pool.retry_in() == 1
        clock.now += 1
        assert pool.candidates() == [DC1]

    def test_back_to_the_first_dc_is_a_failover_too(self) -> None:
        """Leaving DC2 for DC1 (DC2 stopped answering) names DC2 as the one left."""
        clock = Clock()
        pool = DcPool([DC1, DC2], clock=clock)
        pool.failed(DC1, "x")
        pool.connected(DC2)
        pool.disconnected()
        clock.now += 10
        pool.failed(DC2, "reset by peer")
        assert pool.candidates() == [DC1]
        assert pool.connected(DC1) == DC2
        assert pool.reason(DC2) == "reset by peer"


class FakeConnection:
    def __init__(self, url: str) -> None:
        self.dc = f"CN=NTDS Settings,CN={urlsplit(url).hostname}"

    def unbind(self) -> None:
        pass


class FakeDirSync:
    """Records the cookie it was given; reports no change."""

    cookies: ClassVar[list[bytes | None]] = []

    def __init__(self, _c: object, _base: str, cookie: bytes | None, _a: list[str]) -> None:
        self.cookies.append(cookie)
        self.cookie = b"fresh-" + (cookie or b"none")

    def changes(self) -> dict[str, str]:
        return {}


class FakeDcs:
    """The DCs that answer (``up``); the worker's connections to them are faked through its
    public seams: a link factory and a notifier factory."""

    def __init__(self) -> None:
        self.up: set[str] = set()
        self.workers: list[IdentitySyncWorker] = []  # their change watches stop at teardown

    async def open_link(self, settings: LdapSettings) -> Link:
        if settings.url not in self.up:
            raise DependencyUnavailableError(f"could not open {settings.url}: refused")
        return Link(FakeConnection(settings.url), threading.Lock(), url=settings.url)

    @staticmethod
    def notifier(
        _settings: LdapSettings, _base: str, _on_change: Callable[[str, str], None]
    ) -> FakeNotifier:
        return FakeNotifier()

    def watch_connect(self, settings: LdapSettings) -> FakeConnection:
        if settings.url not in self.up:
            raise DependencyUnavailableError(f"could not open {settings.url}: refused")
        return FakeConnection(settings.url)


class FakeNotifier:
    def close(self) -> None:
        pass


def make_worker(onprem: list[str], aws: list[str], dcs: FakeDcs) -> IdentitySyncWorker:
    settings = IdentitySyncSettings(
        onprem=ldap(urls=onprem),
        aws=ldap(urls=aws),
        mapping_file=EXAMPLE,
        s3={"sse": "AES256"},
        health={"host": "127.0.0.1", "port": 0},
        dc_backoff_initial_s=30,
    )
    worker = IdentitySyncWorker(
        settings,
        link_factory=dcs.open_link,
        notifier_factory=dcs.notifier,
        watch_connect=dcs.watch_connect,
    )
    dcs.workers.append(worker)
    return worker


class TestWorkerFailover:
    @pytest.fixture
    def dcs(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDcs]:
        """Fake DCs; the rootDSE read and DirSync (public names of the change feed's module)
        answer from the fake connection."""
        monkeypatch.setattr(changes_module, "highest_usn", lambda c: (c.dc, 500))
        monkeypatch.setattr(changes_module, "DirSyncWatcher", FakeDirSync)
        FakeDirSync.cookies.clear()
        dcs = FakeDcs()
        yield dcs
        for worker in dcs.workers:
            worker.changes.stop_watch()

    async def test_first_dc_dead_at_start(self, dcs: FakeDcs) -> None:
        """The first DC does not answer: the side connects to the second, says dc_failover
        with the reason, and the DC gauge shows the one in use."""
        dcs.up.update({DC2, DC3})
        worker = make_worker([DC1, DC2], [DC3], dcs)
        with capture_logs() as logs:
            await worker.connect()
        assert worker.links["onprem"].url == DC2
        event = next(e for e in logs if e["event"] == "dc_failover")
        assert (event["side"], event["from_dc"], event["to_dc"]) == ("onprem", DC1, DC2)
        assert "refused" in event["reason"]
        assert sample(worker, "indutech_identity_sync_dc", side="onprem", url=DC2) == 1
        assert sample(worker, "indutech_identity_sync_dc", side="onprem", url=DC1) == 0
        assert sample(worker, "indutech_identity_sync_dc_failovers_total", side="onprem") == 1

    async def test_no_dc_at_start_fails_naming_each(self, dcs: FakeDcs) -> None:
        """No DC of a side answers at start: the worker stops, naming every DC and its error."""
        dcs.up.add(DC3)
        worker = make_worker([DC1, DC2], [DC3], dcs)
        with pytest.raises(DependencyUnavailableError, match=r"onprem.*dc1.*refused.*dc2"):
            await worker.connect()

    async def test_dc_lost_mid_run_moves_on_then_backs_off(self, dcs: FakeDcs) -> None:
        """The DC in use goes away: the reconnect tries it once, then the next one; with
        none answering the side has no link (readiness says so) and waits its backoff."""
        dcs.up.update({DC1, DC2, DC3})
        worker = make_worker([DC1, DC2], [DC3], dcs)
        await worker.connect()
        assert worker.links["onprem"].url == DC1
        dcs.up.discard(DC1)
        with capture_logs() as logs:
            await worker.reconnect(["onprem"])
        assert worker.links["onprem"].url == DC2
        events = [e["event"] for e in logs]
        assert events[:2] == ["dc_unreachable", "dc_failover"]
        dcs.up.discard(DC2)
        with capture_logs() as logs:
            await worker.reconnect(["onprem"])
            assert "onprem" not in worker.links
            with pytest.raises(IdentitySyncError, match="no DC of the onprem side answers"):
                await worker.dc_links["onprem"].ping()
            await worker.reconnect(["onprem"])  # both wait their backoff: nothing tried
        assert [e["event"] for e in logs] == ["dc_unreachable", "no_dc_answers"]
        assert sample(worker, "indutech_identity_sync_dc", side="onprem", url=DC2) == 0
        assert sample(worker, "indutech_identity_sync_dc", side="onprem", url=DC1) == 0

    async def test_other_dc_means_fresh_cookie_and_usn(self, dcs: FakeDcs) -> None:
        """The cookie and USN of the DC used before are not reused on another DC: DirSync
        starts without a cookie, the USN is the new DC's, deletes on the other side wait."""
        dcs.up.update({DC2, DC3})
        worker = make_worker([DC1, DC2], [DC3], dcs)
        worker.state = SyncState(
            onprem=CookieState(dc="CN=NTDS Settings,CN=dc1", dirsync_cookie_hex=b"dc1".hex()),
            aws=CookieState(dc="CN=NTDS Settings,CN=dc3", highest_usn=42),
        )
        await worker.connect()
        with capture_logs() as logs:
            await asyncio.to_thread(worker.prime_change_signals)
        assert FakeDirSync.cookies == [None]
        assert worker.state.onprem.dc == "CN=NTDS Settings,CN=dc2"
        assert worker.state.onprem.dirsync_cookie_hex == b"fresh-none".hex()
        assert worker.state.aws.highest_usn == 42  # same AWS DC: its USN goes on
        event = next(e for e in logs if e["event"] == "dc_changed")
        assert (event["side"], event["deletes_held_on"]) == ("onprem", "aws")
        assert worker.delete_hold_until["aws"] > time.monotonic() + 250
        assert "onprem" not in worker.delete_hold_until

    async def test_same_dc_resumes_its_cookie(self, dcs: FakeDcs) -> None:
        """Back on the DC that issued the cookie, DirSync resumes from it; nothing is held."""
        dcs.up.update({DC1, DC3})
        worker = make_worker([DC1, DC2], [DC3], dcs)
        worker.state = SyncState(
            onprem=CookieState(dc="CN=NTDS Settings,CN=dc1", dirsync_cookie_hex=b"dc1".hex()),
            aws=CookieState(dc="CN=NTDS Settings,CN=dc2", highest_usn=42),
        )
        await worker.connect()
        await asyncio.to_thread(worker.prime_change_signals)
        assert FakeDirSync.cookies == [b"dc1"]
        assert worker.state.aws.dc == "CN=NTDS Settings,CN=dc3"
        assert worker.state.aws.highest_usn == 500  # another AWS DC: its own USN
        assert set(worker.delete_hold_until) == {"onprem"}
