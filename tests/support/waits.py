"""Waiting for a state a worker process makes observable — a line in its JSON log, a counter
on its ``/metrics`` — never for a fixed time: a fixed sleep that covers an idle machine
misses on a loaded CI run (three such sleeps failed there before this module)."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def log_since(log: Path, offset: int = 0) -> bytes:
    """The log from byte ``offset`` on (a worker restarted into the same log writes after
    the size it had before)."""
    with log.open("rb") as handle:
        handle.seek(offset)
        return handle.read()


def log_tail(log: Path, size: int = 3000) -> str:
    return log.read_text(errors="replace")[-size:]


def count_events(log: Path, event: str, offset: int = 0) -> int:
    return log_since(log, offset).count(f'"event": "{event}"'.encode())


async def wait_for_log(
    log: Path,
    event: str,
    process: subprocess.Popen[bytes] | None = None,
    *,
    since: int = 0,
    count: int = 1,
    timeout_s: float = 30,
) -> None:
    """Until the log, from byte ``since`` on, holds ``count`` lines of ``event``.

    Fails at once, with the log's tail, when ``process`` exits first; at the deadline it
    kills ``process`` (a failed test never leaves a worker behind) and fails."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(count_events, log, event, since) >= count:
            return
        if process is not None and process.poll() is not None:
            tail = await asyncio.to_thread(log_tail, log)
            pytest.fail(f"the worker exited {process.returncode} before logging {event}:\n{tail}")
        await asyncio.sleep(0.05)
    if process is not None and process.poll() is None:
        process.kill()
        await asyncio.to_thread(process.wait, 10)
    tail = await asyncio.to_thread(log_tail, log)
    pytest.fail(f"the worker did not log {count} {event} within {timeout_s} s:\n{tail}")


def scrape_counter(port: int, name: str, timeout_s: float = 5) -> float | None:
    """The sum over its labels of the metric ``name`` on a worker's ``/metrics``; None while
    the endpoint does not answer (the worker is starting or gone)."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=timeout_s
        ) as response:
            text = response.read().decode()
    except OSError:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((f"{name}{{", f"{name} "))
    )


async def wait_for_counter(
    port: int,
    name: str,
    at_least: float,
    process: subprocess.Popen[bytes] | None = None,
    *,
    timeout_s: float = 30,
) -> float:
    """Until the counter ``name`` on ``port`` reaches ``at_least``; its value then."""
    deadline = time.monotonic() + timeout_s
    value: float | None = None
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(scrape_counter, port, name)
        if value is not None and value >= at_least:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the worker exited {process.returncode} with {name} at {value}")
        await asyncio.sleep(0.05)
    pytest.fail(f"{name} was {value}, not {at_least}, within {timeout_s} s")
