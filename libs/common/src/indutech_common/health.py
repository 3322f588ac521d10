"""One HTTP port per worker: /healthz (alive), /readyz (dependencies answer), /metrics.

Pings are registered next to the clients they test (as svcs does), so
readiness always reflects the clients the worker actually uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from indutech_common.logging import scrub
from indutech_common.metrics import CONTENT_TYPE_LATEST, WorkerMetrics
from indutech_common.settings import HealthSettings

Ping = Callable[[], Awaitable[object]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_log = structlog.get_logger(__name__)


@dataclass
class PingResult:
    name: str
    ok: bool
    duration_ms: float
    error: str | None = None


@dataclass
class HealthState:
    """What the worker tells the health server about itself."""

    started: bool = False
    stopping: bool = False


class HealthServer:
    def __init__(self, settings: HealthSettings, metrics: WorkerMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._pings: dict[str, Ping] = {}
        self._pages: dict[str, Handler] = {}
        self.state = HealthState()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def add_page(self, path: str, handler: Handler) -> None:
        """Serve one more GET page on the same port (before ``start``), e.g. a status view."""
        if path in {"/healthz", "/readyz", "/metrics"}:
            raise ValueError(f"{path} is the health server's own")
        self._pages[path] = handler

    def register_ping(self, name: str, ping: Ping) -> None:
        """Register a readiness check; it must raise (or time out) when the dependency is down."""
        self._pings[name] = ping

    async def check(self) -> list[PingResult]:
        return list(await asyncio.gather(*(self._run_ping(n, p) for n, p in self._pings.items())))

    async def _run_ping(self, name: str, ping: Ping) -> PingResult:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(ping(), timeout=self._settings.ping_timeout_s)
        except Exception as exc:
            error = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            result = PingResult(name, False, _ms(started), scrub(error))
        else:
            result = PingResult(name, True, _ms(started))
        self._metrics.dependency_up.labels(self._metrics.worker, name).set(1 if result.ok else 0)
        return result

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "worker": self._metrics.worker})

    async def _readyz(self, _request: web.Request) -> web.Response:
        results = await self.check()
        ready = self.state.started and not self.state.stopping and all(r.ok for r in results)
        self._metrics.ready.labels(self._metrics.worker).set(1 if ready else 0)
        body = {
            "ready": ready,
            "started": self.state.started,
            "stopping": self.state.stopping,
            "checks": {
                r.name: {"ok": r.ok, "duration_ms": r.duration_ms, "error": r.error}
                for r in results
            },
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics_handler(self, _request: web.Request) -> web.Response:
        response = web.Response(body=self._metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_handler)
        for path, handler in self._pages.items():
            app.router.add_get(path, handler)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._settings.host, self._settings.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._settings.port
        _log.info("health_server_started", host=self._settings.host, port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
