"""The health server: /healthz, /readyz following its pings, /metrics in Prometheus format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from indutech_common.health import HealthServer
from indutech_common.metrics import WorkerMetrics
from indutech_common.settings import HealthSettings


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    metrics = WorkerMetrics("health-test")
    health = HealthServer(HealthSettings(host="127.0.0.1", port=0, ping_timeout_s=0.5), metrics)
    await health.start()
    yield health
    await health.stop()


async def get(health: HealthServer, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{health.port}{path}") as response,
    ):
        return response.status, await response.text()


class TestHealthServer:
    async def test_healthz_answers(self, server: HealthServer) -> None:
        status, body = await get(server, "/healthz")
        assert status == 200
        assert '"status": "ok"' in body

    async def test_readyz_follows_a_real_dependency(self, server: HealthServer) -> None:
        """Ready only once started and while the TCP dependency accepts connections."""
        listener = await asyncio.start_server(
            lambda _reader, writer: writer.close(), "127.0.0.1", 0
        )
        port = listener.sockets[0].getsockname()[1]

        async def ping() -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()

        server.register_ping("dependency", ping)
        status, body = await get(server, "/readyz")
        assert status == 503  # not started yet
        assert '"started": false' in body

        server.state.started = True
        status, _ = await get(server, "/readyz")
        assert status == 200

        listener.close()
        await listener.wait_closed()
        status, body = await get(server, "/readyz")
        assert status == 503
        assert "ConnectionRefusedError" in body

        _, metrics = await get(server, "/metrics")
        assert 'indutech_dependency_up{dependency="dependency",worker="health-test"} 0.0' in metrics
        assert 'indutech_ready{worker="health-test"} 0.0' in metrics

    async def test_slow_ping_times_out(self, server: HealthServer) -> None:
        """A ping that hangs counts as down after ping_timeout_s."""

        async def hang() -> None:
            await asyncio.sleep(10)

        server.register_ping("slow", hang)
        server.state.started = True
        status, body = await get(server, "/readyz")
        assert status == 503
        assert "timed out" in body

    async def test_metrics_exposes_standard_names(self, server: HealthServer) -> None:
        """The standard indutech_* metrics are exported."""
        metrics = server._metrics
        metrics.record_success(stream="t", count=3, last_event_time=None)
        metrics.error("io")
        status, text = await get(server, "/metrics")
        assert status == 200
        assert 'indutech_records_out_total{stream="t",worker="health-test"} 3.0' in text
        assert 'indutech_errors_total{kind="io",worker="health-test"} 1.0' in text
        assert "indutech_last_success_timestamp_seconds" in text
