"""Which domain controller of a side to use: the first that answers, and a wait before one that
did not answer is tried again.

A side lists its DCs in order (``LdapSettings.dc_urls``). The worker stays on the DC it uses
while that DC answers; when it stops answering (a cycle fails and the reconnect to it fails
too), the others are tried in the configured order. A DC that did not answer waits
``initial * 2**(n-1)`` seconds (at most ``maximum``) after its n-th failure in a row before
it is tried again, so a side whose DCs are all away is retried at that pace instead of on
every tick. Pure logic with an injectable clock; the worker does the connecting.

What changing DC means for change detection is in the worker: a DirSync cookie and a
uSNChanged high-water mark are valid only on the DC that issued them (both are stored with
that DC's name), so the first cycle after any reconnect is a full reconcile, and a DC of
another name starts its cookie and USN afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class _Health:
    failures: int = 0  # in a row
    retry_at: float = 0.0  # clock time before which the DC is not tried again
    error: str = ""  # why it last failed


class DcPool:
    """The DCs of one side in order: the one in use, and when each failed one may be retried."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a side needs at least one DC")
        self.urls = tuple(urls)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = max(backoff_max_s, backoff_initial_s)
        self.clock = clock
        self.current: str | None = None  # connected to it now
        self.last_used: str | None = None  # the DC used last (kept while none answers)
        self._health = {url: _Health() for url in self.urls}

    def candidates(self) -> list[str]:
        """The DCs to try now, in order: the one used last first (stay while it answers),
        then the others as configured; those still waiting after a failure are left out."""
        first = [self.last_used] if self.last_used is not None else []
        order = first + [url for url in self.urls if url != self.last_used]
        now = self.clock()
        return [url for url in order if self._health[url].retry_at <= now]

    def failed(self, url: str, error: str) -> float:
        """``url`` did not answer; returns how long it now waits before the next try."""
        health = self._health[url]
        health.failures += 1
        health.error = error
        delay = min(self.backoff_initial_s * 2.0 ** (health.failures - 1), self.backoff_max_s)
        health.retry_at = self.clock() + delay
        if self.current == url:
            self.current = None
        return delay

    def disconnected(self) -> None:
        """The connection in use was closed (a cycle failed): the next connect tries the same
        DC first, the others only if it does not answer."""
        self.current = None

    def connected(self, url: str) -> str | None:
        """``url`` answered and is used from now on. Returns the DC it replaces when this is a
        failover: the one used before, or at start the first configured DC (it did not
        answer); None when it is the same DC or the first choice."""
        self._health[url] = _Health()
        before = self.last_used if self.last_used is not None else self.urls[0]
        self.current = self.last_used = url
        return None if before == url else before

    def reason(self, url: str) -> str:
        """Why ``url`` was last left (its last connect error)."""
        return self._health[url].error

    def retry_in(self) -> float:
        """Seconds until some DC may be tried again (0: one may be tried now)."""
        now = self.clock()
        return max(0.0, min(h.retry_at for h in self._health.values()) - now)
