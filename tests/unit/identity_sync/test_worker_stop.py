"""The worker's resources are adopted by the base Worker: each closes on its own step of the
one stop budget, so one that fails to close leaves the others closing (DCs faked)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import IdentitySyncSettings
from indutech_identity_sync.links import Link
from indutech_identity_sync.sources import changes as changes_module
from indutech_identity_sync.state import MemoryStateStore
from indutech_identity_sync.worker import IdentitySyncWorker
from tests.unit.identity_sync.test_failover import (
    DC1,
    DC3,
    EXAMPLE,
    FakeConnection,
    FakeDirSync,
    ldap,
)


class ClosingConnection(FakeConnection):
    """A fake DC connection that records its unbind."""

    unbound: list[str]

    def __init__(self, url: str, unbound: list[str]) -> None:
        super().__init__(url)
        self.url = url
        self.unbound = unbound

    def unbind(self) -> None:
        self.unbound.append(self.url)


class BrokenNotifier:
    """A change-notification listener whose close fails with something unexpected."""

    def close(self) -> None:
        raise RuntimeError("listener thread wedged")


class TestStop:
    @pytest.fixture(autouse=True)
    def _fake_change_signals(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(changes_module, "highest_usn", lambda c: (c.dc, 500))
        monkeypatch.setattr(changes_module, "DirSyncWatcher", FakeDirSync)

    async def test_a_failed_close_does_not_keep_the_dc_connections_open(self) -> None:
        """A notifier that fails to close is logged (cleanup_failed, its step) and the DC
        connections still close after it."""
        unbound: list[str] = []

        async def open_link(settings: LdapSettings) -> Link:
            connection = ClosingConnection(settings.url, unbound)
            return Link(connection, threading.Lock(), url=settings.url)

        def notifier(
            _s: LdapSettings, _base: str, _on_change: Callable[[str, str], None]
        ) -> BrokenNotifier:
            return BrokenNotifier()

        settings = IdentitySyncSettings(
            onprem=ldap(urls=[DC1]),
            aws=ldap(urls=[DC3]),
            mapping_file=EXAMPLE,
            s3={"sse": "AES256"},
            health={"host": "127.0.0.1", "port": 0},
            change_notifications=True,
        )
        worker = IdentitySyncWorker(
            settings,
            store=MemoryStateStore(),
            link_factory=open_link,
            notifier_factory=notifier,
            watch_connect=lambda s: FakeConnection(s.url),
        )
        worker.request_exit()  # the main loop returns at once: startup, then the stop
        with capture_logs() as logs:
            assert await worker.serve(install_signal_handlers=False) == 0
        failed = [e for e in logs if e["event"] == "cleanup_failed"]
        assert [e["step"] for e in failed] == ["change_notifications"]
        assert sorted(unbound) == sorted([DC1, DC3])
        assert worker.links == {}
