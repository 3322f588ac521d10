"""A cycle's CPU: each scrape parsed once, and the shipper answering while it works.

Against a real scrape endpoint (aiohttp, as a worker serves its /metrics) and moto's
CloudWatch over HTTPS. The large exposition holds only counters, so the cycle does the
whole parse, conversion and status work while sending nothing (the first sight of a
counter is its baseline): moto keeps every datum it is sent.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import parser

from indutech_common.settings import HealthSettings
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_metrics_shipper.status import State
from indutech_metrics_shipper.worker import MetricsShipperWorker
from tests.integration.metrics_shipper.test_shipping import wait_until
from tests.support.stack import StackSettings

pytestmark = pytest.mark.integration

WORKERS = ("iot-ingest", "iot-to-s3", "sql-backup", "identity-sync")


def counters(series: int) -> str:
    """``series`` counters, 200 a family, labelled with our workers (as the status board
    reads them), in the text format a worker's client library writes."""
    lines: list[str] = []
    for family in range(series // 200):
        name = f"indutech_test_records_{family:03d}"
        lines += [f"# HELP {name}_total Records.", f"# TYPE {name}_total counter"]
        lines += [
            f'{name}_total{{worker="{WORKERS[i % 4]}",partition="{i}"}} {1000 + i}.0'
            for i in range(200)
        ]
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def exposition_endpoint(text: str) -> AsyncIterator[str]:
    """``text`` served at /metrics on a free port; yields the URL."""
    app = web.Application()

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(text=text, content_type="text/plain")

    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        await runner.cleanup()


def settings_for(stack: StackSettings, unique: str, url: str) -> MetricsShipperSettings:
    return MetricsShipperSettings(
        cloudwatch=stack.cloudwatch.model_copy(),
        namespace=f"InduTech/Test/{unique}",
        targets=(url,),
        interval_s=60,
        health=HealthSettings(host="127.0.0.1", port=0),
    )


class ParserRuns:
    """Counts runs of prometheus-client's parser in any thread, from a profile hook (no
    patching): one generator frame per run, whatever name the parser was imported under."""

    def __init__(self) -> None:
        self._code = parser.text_string_to_metric_families.__code__
        self._frames: list[FrameType] = []  # held, so that no frame id is reused
        self._lock = threading.Lock()

    def __call__(self, frame: FrameType, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code is self._code:
            with self._lock:
                if not any(seen is frame for seen in self._frames):
                    self._frames.append(frame)

    @property
    def runs(self) -> int:
        return len(self._frames)


class TestCycleCost:
    def test_each_scrape_is_parsed_once_a_cycle(self, stack: StackSettings, unique: str) -> None:
        """The converter and the status board (seven flows) share one parse of each text."""
        runs = ParserRuns()

        async def one_cycle() -> None:
            async with (
                exposition_endpoint(counters(400)) as first,
                exposition_endpoint(counters(200)) as second,
            ):
                settings = settings_for(stack, unique, first).model_copy(
                    update={"targets": (first, second)}
                )
                shipper = MetricsShipperWorker(settings, once=True)
                assert await shipper.serve(install_signal_handlers=False) == 0
                assert shipper.cycles == 1
                assert {
                    s.rule.worker for s in shipper.statuses() if s.state is not State.GREY
                } == set(WORKERS)

        # The hook is in every thread started from here on: the cycle runs in a thread of
        # its own, with its own event loop and the threads it parses in.
        threading.setprofile(runs)
        try:
            cycle = threading.Thread(target=asyncio.run, args=(one_cycle(),))
            cycle.start()
            cycle.join(90)
        finally:
            threading.setprofile(None)
        assert not cycle.is_alive()
        assert runs.runs == 2  # two targets, one parse each (it was eight each)

    async def test_the_health_endpoint_answers_during_a_large_cycle(
        self, stack: StackSettings, unique: str
    ) -> None:
        """20,000 series (about 40,000 lines): parse and conversion off the event loop, so a
        probe (from a thread of its own, as the kubelet's would come) is answered at once."""
        port = free_port()
        async with exposition_endpoint(counters(20_000)) as url:
            settings = settings_for(stack, unique, url).model_copy(
                update={"health": HealthSettings(host="127.0.0.1", port=port)}
            )
            shipper = MetricsShipperWorker(settings)
            done = threading.Event()
            latencies: list[float] = []
            # asking before the shipper starts: its first cycle follows its start at once
            probe = threading.Thread(
                target=probe_until, args=(f"http://127.0.0.1:{port}/healthz", done, latencies)
            )
            probe.start()
            task = asyncio.create_task(shipper.serve(install_signal_handlers=False))
            try:
                await wait_until(lambda: shipper.cycles >= 1 or task.done(), timeout_s=90)
                assert shipper.converter.export_state()["counters"], "the cycle converted nothing"
            finally:
                done.set()
                shipper.request_exit()
                assert await task == 0
                await asyncio.to_thread(probe.join, 60)
        # on the event loop, the parse stalled it (for the board, seven times over): 5.6 s
        assert max(latencies) < 1.0, f"/healthz took {max(latencies):.2f} s during the cycle"
        assert len(latencies) > 5, "the cycle ended before the health endpoint answered"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def probe_until(url: str, done: threading.Event, latencies: list[float]) -> None:
    """GET ``url`` every 20 ms until ``done``; each answer's time into ``latencies`` (refused
    connections, before the server listens, are not answers)."""
    while not done.is_set():
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - our http URL
                assert response.status == 200
        except ConnectionRefusedError:
            pass
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError):
                raise
        else:
            latencies.append(time.perf_counter() - began)
        done.wait(0.02)
