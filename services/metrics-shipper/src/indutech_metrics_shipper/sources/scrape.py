"""The workers' ``/metrics``: static URLs, or DNS names that resolve to several pods."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog

from indutech_common.settings import TlsSettings
from indutech_common.tls import create_client_ssl_context

_log = structlog.get_logger(__name__)
DNS_SCHEME_PREFIX = "dns+"


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint to scrape; ``id`` keeps a pod's counters apart from its siblings'."""

    id: str
    url: str


@dataclass(frozen=True, slots=True)
class Scrape:
    target: Target
    scraped_at: float
    text: str | None
    error: str | None = None


class ScrapeSource:
    """Scrapes every target concurrently; a target that fails is reported, not fatal."""

    name = "scrape-targets"

    def __init__(
        self, targets: tuple[str, ...], *, timeout_s: float, ca_file: Path | None = None
    ) -> None:
        self._configured = targets
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        # https targets are verified (the system's CAs, or ca_file); plain http is for
        # in-cluster pod endpoints, which the NetworkPolicy confines to the monitoring namespace
        self._ssl: ssl.SSLContext = create_client_ssl_context(
            TlsSettings(ca_file=ca_file, min_version="1.2")
        )
        self._session: aiohttp.ClientSession | None = None
        self.last_targets: list[Target] = []

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def resolve(self) -> list[Target]:
        """Each configured URL; a ``dns+`` URL becomes one target per address it resolves to."""
        targets: list[Target] = []
        for configured in self._configured:
            if not configured.startswith(DNS_SCHEME_PREFIX):
                targets.append(Target(configured, configured))
                continue
            url = urlsplit(configured.removeprefix(DNS_SCHEME_PREFIX))
            host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
            except OSError as exc:
                _log.warning("target_unresolved", target=configured, error=str(exc))
                continue
            for address in sorted({str(info[4][0]) for info in infos}):
                netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
                pod_url = urlunsplit((url.scheme, netloc, url.path, url.query, ""))
                targets.append(Target(f"{host}/{address}:{port}", pod_url))
        self.last_targets = targets
        return targets

    async def read(self) -> list[Scrape]:
        targets = await self.resolve()
        return list(await asyncio.gather(*(self._scrape(t) for t in targets)))

    async def _scrape(self, target: Target) -> Scrape:
        started = time.time()
        try:
            async with self._client().get(target.url, ssl=self._ssl) as response:
                if response.status != HTTPStatus.OK:
                    return Scrape(target, started, None, f"HTTP {response.status}")
                return Scrape(target, started, await response.text())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Scrape(target, started, None, f"{type(exc).__name__}: {exc}")

    async def ping(self) -> None:
        """Ready when the configured names resolve (a target may be down; that is counted)."""
        if self._configured and not await self.resolve():
            raise ConnectionError("no scrape target resolves")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
