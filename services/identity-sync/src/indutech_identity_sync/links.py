"""A side's connections to its domain controllers, and the move to another DC when the one in
use stops answering (``failover.DcPool`` chooses which; this module connects).

``DcLink`` is one side's ``Resource``: its ``ping`` (a rootDSE read) is that side's check on
``/readyz``, its ``close`` closes every connection at stop. It holds at most one ``Link`` at a
time: the main connection to one DC, the lock that keeps ldap3 to one thread at a time, and
the extra connections of the parallel writers (``writer_concurrency`` - 1), used only by a
cycle, which holds the lock. ldap3 is synchronous: what touches a connection runs in a thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import ldap3
import structlog
from ldap3.core.exceptions import LDAPException

from indutech_common.errors import DependencyUnavailableError, IndutechError
from indutech_common.ldap import ldap_connect
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import Side
from indutech_identity_sync.errors import IdentitySyncError
from indutech_identity_sync.failover import DcPool
from indutech_identity_sync.metrics import IdentitySyncMetrics
from indutech_identity_sync.sources.ldap import close_quietly, highest_usn

# Extra writer connections idle longer than this are checked (a rootDSE read) before a cycle
# writes with them, and opened again if the DC dropped them: DCs close idle LDAP connections
# (AD after MaxConnIdleTime, 900 s by default), and only the main one is used on every tick.
WRITER_IDLE_S = 60.0


@dataclass
class Link:
    """One side's connection to one DC and the lock that keeps ldap3 to one thread at a time,
    plus the extra connections of the parallel writers (``writer_concurrency`` - 1), used only
    by a cycle, which holds the lock."""

    connection: ldap3.Connection
    lock: threading.Lock
    url: str = ""  # the DC these connections go to
    writers: list[ldap3.Connection] = field(default_factory=list)
    writers_used: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        for connection in [self.connection, *self.writers]:
            close_quietly(connection)


LinkFactory = Callable[[LdapSettings], Awaitable[Link]]


async def open_link(settings: LdapSettings, *, writer_concurrency: int) -> Link:
    """The main connection to one DC and the writers' extra ones (all or none)."""
    # auto_range off: ranged `member` values are followed by our own tested code; no
    # empty attributes: ldap3 2.9 then fails on DirSync's `member;range=0-0` + `1-1`
    # (linked values added and removed), deleting `member` twice
    connection = await asyncio.to_thread(
        ldap_connect, settings, auto_range=False, return_empty_attributes=False
    )
    link = Link(connection, threading.Lock(), url=settings.url)
    extra = [asyncio.to_thread(ldap_connect, settings) for _ in range(writer_concurrency - 1)]
    opened = await asyncio.gather(*extra, return_exceptions=True)
    link.writers = [c for c in opened if isinstance(c, ldap3.Connection)]
    failed = [e for e in opened if isinstance(e, BaseException)]
    if failed:
        await asyncio.to_thread(link.close)
        raise failed[0]
    return link


class DcLink:
    """One side's connection to the first of its DCs that answers (a ``Resource``)."""

    def __init__(
        self,
        side: Side,
        settings: LdapSettings,
        *,
        factory: LinkFactory,
        metrics: IdentitySyncMetrics,
        backoff_initial_s: float,
        backoff_max_s: float,
    ) -> None:
        self.side = side
        self.settings = settings
        self.factory = factory
        self.metrics = metrics
        self.pool = DcPool(
            settings.dc_urls, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s
        )
        self.link: Link | None = None
        self.log = structlog.get_logger("identity-sync")
        self._show_dc()

    @property
    def name(self) -> str:
        return f"ldap_{self.side}"

    def _show_dc(self) -> None:
        self.metrics.dc_in_use(self.side, self.pool.urls, self.pool.current)

    def unreachable(self) -> DependencyUnavailableError:
        """The error of a side none of whose DCs answers, naming each DC and its error."""
        tried = "; ".join(f"{url}: {self.pool.reason(url)}" for url in self.pool.urls)
        return DependencyUnavailableError(f"no DC of the {self.side} side answers ({tried})")

    async def connect(self) -> bool:
        """Connect to the first of the side's DCs that answers (the one used last first);
        False when none does (each waits its backoff before it is tried again)."""
        side, pool = self.side, self.pool
        tried = False
        for url in pool.candidates():
            tried = True
            try:
                link = await self.factory(self.settings.for_dc(url))
            except (LDAPException, IndutechError) as exc:
                wait = pool.failed(url, str(exc))
                self.log.warning(
                    "dc_unreachable", side=side, url=url, error=str(exc), retry_in_s=round(wait, 1)
                )
                continue
            replaced = pool.connected(url)
            self.link = link
            self._show_dc()
            if replaced is not None:
                self.metrics.failover(side)
                self.log.warning(
                    "dc_failover",
                    side=side,
                    from_dc=replaced,
                    to_dc=url,
                    reason=pool.reason(replaced) or "did not answer",
                )
            return True
        self._show_dc()
        if tried:
            self.log.error(
                "no_dc_answers",
                side=side,
                urls=list(pool.urls),
                retry_in_s=round(pool.retry_in(), 1),
            )
        return False

    async def drop(self) -> None:
        """Close the connections in use (after a failed cycle any may be broken); the next
        ``connect`` tries the same DC first."""
        link, self.link = self.link, None
        if link is not None:
            self.pool.disconnected()
            await asyncio.to_thread(link.close)

    async def ping(self) -> None:
        def ping() -> None:
            link = self.link
            if link is None:
                urls = ", ".join(self.pool.urls)
                raise IdentitySyncError(f"no DC of the {self.side} side answers ({urls})")
            if not link.lock.acquire(timeout=1):
                return  # busy with a cycle: it answers
            try:
                highest_usn(link.connection)
            finally:
                link.lock.release()

        await asyncio.to_thread(ping)

    async def close(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            await asyncio.to_thread(link.close)

    def writer_connections(self) -> list[ldap3.Connection]:
        """The extra writer connections, checked first when idle for a while and opened again
        if the DC dropped them (in the cycle's thread, under the link's lock)."""
        link = self.link
        if link is None:
            return []
        if time.monotonic() - link.writers_used > WRITER_IDLE_S:
            settings = self.settings.for_dc(link.url)
            for i, connection in enumerate(link.writers):
                try:
                    highest_usn(connection)
                except (LDAPException, IndutechError) as exc:
                    self.log.info("writer_connection_renewed", side=self.side, error=str(exc))
                    close_quietly(connection)
                    link.writers[i] = ldap_connect(settings)
        link.writers_used = time.monotonic()
        return link.writers
