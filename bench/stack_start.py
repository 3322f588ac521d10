"""How long the native stack takes to start: cold (new state folder, installs cached)
and warm (state kept, services stopped), and the no-op `up` when already running."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.harness import REPO_ROOT, Result, run_quiet
from bench.stats import spread

STACK = str(REPO_ROOT / "deploy" / "local" / "stack")
REPEATS = int(os.environ.get("BENCH_STACK_REPEATS", "3"))


def _timed_up(env: dict[str, str]) -> float:
    started = time.perf_counter()
    run_quiet(STACK, "up", env=env)
    return time.perf_counter() - started


def run() -> list[Result]:
    """Stops the stack of ``STACK_DIR`` (and leaves it running at the end): only when no one
    else uses it."""
    env = dict(os.environ)
    run_quiet(STACK, "down", env=env)
    colds, warms, runnings = [], [], []
    for _ in range(REPEATS):
        cold_dir = Path(tempfile.mkdtemp(prefix="indutech-stack-cold-"))
        cold_env = {**env, "STACK_DIR": str(cold_dir)}
        try:
            colds.append(_timed_up(cold_env))
        finally:
            run_quiet(STACK, "down", env=cold_env)
            shutil.rmtree(cold_dir, ignore_errors=True)
    for repeat in range(REPEATS):
        warms.append(_timed_up(env))
        runnings.append(_timed_up(env))
        if repeat < REPEATS - 1:
            run_quiet(STACK, "down", env=env)
    note = "Debian packages, Kafka jars and the MinIO binary already installed"
    runs = f"{REPEATS} runs, value = median"
    return [
        Result(
            name="stack_start_cold",
            value=statistics.median(colds),
            unit="s",
            notes=f"new state folder; {note}; {spread(colds, 1)} s; {runs}",
        ),
        Result(
            name="stack_start_warm",
            value=statistics.median(warms),
            unit="s",
            notes=f"state kept, services stopped; {spread(warms, 1)} s; {runs}",
        ),
        Result(
            name="stack_up_when_running",
            value=statistics.median(runnings),
            unit="s",
            notes=f"idempotent no-op; {spread(runnings, 2)} s; {runs}",
        ),
    ]
