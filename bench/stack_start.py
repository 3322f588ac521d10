"""How long the native stack takes to start: cold (new state folder, installs cached)
and warm (state kept, services stopped), and the no-op `up` when already running."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.harness import REPO_ROOT, Result, run_quiet

STACK = str(REPO_ROOT / "deploy" / "local" / "stack")


def _timed_up(env: dict[str, str]) -> float:
    started = time.perf_counter()
    run_quiet(STACK, "up", env=env)
    return time.perf_counter() - started


def run() -> list[Result]:
    env = dict(os.environ)
    run_quiet(STACK, "down", env=env)
    cold_dir = Path(tempfile.mkdtemp(prefix="indutech-stack-cold-"))
    cold_env = {**env, "STACK_DIR": str(cold_dir)}
    try:
        cold = _timed_up(cold_env)
    finally:
        run_quiet(STACK, "down", env=cold_env)
        shutil.rmtree(cold_dir, ignore_errors=True)
    warm = _timed_up(env)
    running = _timed_up(env)
    note = "Debian packages, Kafka jars and the MinIO binary already installed"
    return [
        Result(name="stack_start_cold", value=cold, unit="s", notes=f"new state folder; {note}"),
        Result(name="stack_start_warm", value=warm, unit="s", notes="state kept, services stopped"),
        Result(name="stack_up_when_running", value=running, unit="s", notes="idempotent no-op"),
    ]
