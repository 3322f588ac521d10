"""Result records, machine description, and the two outputs: bench/results.json and
docs/benchmarks.md. Results are merged by name, so running one benchmark keeps the others."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import uvloop

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = REPO_ROOT / "bench" / "results.json"
BENCHMARKS_MD = REPO_ROOT / "docs" / "benchmarks.md"
# Hand-written reading of the numbers (decisions, what is stale); kept apart so that a
# `save()` that rewrites the page cannot drop it.
NARRATIVE_MD = REPO_ROOT / "bench" / "narrative.md"


@dataclass
class Result:
    name: str
    value: float
    unit: str
    peer: str | None = None
    peer_value: float | None = None
    ratio: float | None = None
    date: str = ""
    machine: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        self.value = round(self.value, 3)
        if self.peer_value is not None:
            self.peer_value = round(self.peer_value, 3)
            if self.ratio is None and self.peer_value:
                self.ratio = round(self.value / self.peer_value, 3)
        self.date = self.date or datetime.now(UTC).strftime("%Y-%m-%d")
        self.machine = self.machine or machine_description()


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, {system}"


T = TypeVar("T")


def run_workers(main: Coroutine[Any, Any, T]) -> T:
    """Run a benchmark's workers on the event loop production uses (``Worker.run()``:
    uvloop), so TLS and the loop itself cost what they cost in a pod."""
    return uvloop.run(main)


def run_quiet(*command: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    completed = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr[-2000:]}"
        )
    return completed.stdout


def save(results: list[Result]) -> None:
    existing: dict[str, dict[str, object]] = {}
    if RESULTS_JSON.exists():
        existing = {r["name"]: r for r in json.loads(RESULTS_JSON.read_text())}
    for result in results:
        existing[result.name] = asdict(result)
    ordered = sorted(existing.values(), key=lambda r: str(r["name"]))
    RESULTS_JSON.write_text(json.dumps(ordered, indent=2) + "\n")
    BENCHMARKS_MD.write_text(render_markdown(ordered))


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def render_markdown(results: list[dict[str, object]]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (bench/); the same numbers are in bench/results.json.",
        "Each line compares our code with a real peer measured in the same run on the same",
        "machine; `ratio` is ours ÷ peer for throughput, and peer ÷ ours for times where noted.",
        "Speed is never asserted in tests; these numbers are read, not gated.",
        "",
    ]
    if NARRATIVE_MD.exists():
        lines += [NARRATIVE_MD.read_text().strip(), ""]
    lines += [
        "| benchmark | value | unit | peer | peer value | ratio | date | machine | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            "| {name} | {value} | {unit} | {peer} | {peer_value} | {ratio} | {date} | {machine} "
            "| {notes} |".format(
                name=r["name"],
                value=_fmt(r["value"]),
                unit=r["unit"],
                peer=r.get("peer") or "—",
                peer_value=_fmt(r.get("peer_value")),
                ratio=_fmt(r.get("ratio")),
                date=r["date"],
                machine=r.get("machine", ""),
                notes=r.get("notes", ""),
            )
        )
    lines.append("")
    return "\n".join(lines)
