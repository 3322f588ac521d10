"""A progress line for long runs (backup, restore): done/total, rows, bytes, rate, ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints at most one line per ``interval_s`` to ``stream`` (stderr by default)."""

    def __init__(self, *, stream: TextIO | None = None, interval_s: float = 2.0) -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.label = ""
        self.total = 0
        self.done = 0
        self.skipped = 0
        self.rows = 0
        self.nbytes = 0
        self.started = time.monotonic()
        self._last = 0.0

    def start(self, label: str, *, total: int) -> None:
        self.label, self.total = label, total
        self.done = self.skipped = self.rows = self.nbytes = 0
        self.started = time.monotonic()
        self._print()

    def advance(self, *, rows: int = 0, nbytes: int = 0, skipped: bool = False) -> None:
        self.done += 1
        self.skipped += int(skipped)
        if not skipped:
            self.rows += rows
            self.nbytes += nbytes
        if time.monotonic() - self._last >= self.interval_s or self.done == self.total:
            self._print()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        elapsed = max(self.elapsed_s, 1e-6)
        rate = self.rows / elapsed
        eta = ""
        if 0 < self.done < self.total:
            eta = f", ETA {elapsed / self.done * (self.total - self.done):.0f}s"
        skipped = f" ({self.skipped} already done)" if self.skipped else ""
        return (
            f"{self.label}: {self.done}/{self.total}{skipped}, {self.rows:,} rows, "
            f"{self.nbytes / 1e6:.1f} MB, {rate:,.0f} rows/s, {elapsed:.1f}s{eta}"
        )

    def _print(self) -> None:
        self._last = time.monotonic()
        print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        self._print()
