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
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine
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
        if event != "call" or frame.f_code is not self._code:
            return
        with self._lock:
            if any(seen is frame for seen in self._frames):
                return  # a generator resumed, not a new run
            self._frames.append(frame)
        self.run_started()

    def run_started(self) -> None:
        """Called in the parser's thread as each run starts, before it parses a line."""

    @property
    def runs(self) -> int:
        return len(self._frames)


def run_profiled(
    hook: Callable[[FrameType, str, Any], None], main: Coroutine[Any, Any, None]
) -> None:
    """``main`` in a thread started after ``hook`` is set, as are the threads the shipper's
    cycle parses in (a profile hook reaches only threads started after it)."""
    threading.setprofile(hook)
    try:
        thread = threading.Thread(target=asyncio.run, args=(main,))
        thread.start()
        thread.join(90)
    finally:
        threading.setprofile(None)
    assert not thread.is_alive()


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

        run_profiled(runs, one_cycle())
        assert runs.runs == 2  # two targets, one parse each (it was eight each)

    def test_the_health_endpoint_answers_during_a_large_cycle(
        self, stack: StackSettings, unique: str
    ) -> None:
        """20,000 series (about 40,000 lines): parse and conversion off the event loop, so a
        probe (from a thread of its own, as the kubelet's would come) is answered while the
        parse runs. No clock: the parse waits for the answer, so an answer proves the loop
        was free; with the parse on the loop (it was, and stalled it 5.6 s) none comes."""
        port = free_port()
        asked = AskDuringParse(f"http://127.0.0.1:{port}/healthz")
        converted: list[bool] = []

        async def one_cycle() -> None:
            async with exposition_endpoint(counters(20_000)) as url:
                settings = settings_for(stack, unique, url).model_copy(
                    update={"health": HealthSettings(host="127.0.0.1", port=port)}
                )
                shipper = MetricsShipperWorker(settings, once=True)
                assert await shipper.serve(install_signal_handlers=False) == 0
                converted.append(bool(shipper.converter.export_state()["counters"]))

        run_profiled(asked, one_cycle())
        assert converted == [True], "the cycle converted nothing"
        assert asked.answers, "the parser never ran"
        assert all(asked.answers), f"/healthz did not answer during the parse: {asked.answers}"


class AskDuringParse(ParserRuns):
    """As each run of the parser starts, GET ``url`` from the parser's thread and wait for
    the answer before the parse goes on. Any HTTP status is an answer (the loop served
    it); a timeout is not."""

    def __init__(self, url: str, timeout_s: float = 20) -> None:
        super().__init__()
        self.url = url
        self.timeout_s = timeout_s
        self.answers: list[bool] = []

    def run_started(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s):  # noqa: S310 - our http URL
                pass
            answered = True
        except urllib.error.HTTPError:
            answered = True
        except (urllib.error.URLError, TimeoutError):
            answered = False
        with self._lock:
            self.answers.append(answered)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
