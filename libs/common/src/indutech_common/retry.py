"""Retries with exponential backoff and full jitter.

A dependency outage must mean waiting and recovering, not a crash loop: the
caller decides which exceptions are transient, how long it may wait in total,
and gets a structured log line per retry.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import structlog

from indutech_common.errors import DependencyUnavailableError

T = TypeVar("T")
_log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential backoff with full jitter (AWS Architecture Blog, 2015)."""

    initial_s: float = 0.2
    max_s: float = 30.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.multiplier < 1:
            raise ValueError("Backoff needs 0 < initial_s <= max_s and multiplier >= 1")

    def ceilings(self) -> Iterator[float]:
        """The upper bound of each successive delay, before jitter."""
        ceiling = self.initial_s
        while True:
            yield ceiling
            ceiling = min(self.max_s, ceiling * self.multiplier)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """Jittered delays: uniform in [0, ceiling], so retries from many pods spread out."""
        draw = (rng or random).uniform
        for ceiling in self.ceilings():
            yield draw(0.0, ceiling)


async def retry_async(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError),
    backoff: Backoff | None = None,
    deadline_s: float | None = None,
    max_attempts: int | None = None,
) -> T:
    """Run ``operation`` until it succeeds, a non-transient error escapes, or time runs out.

    Raises ``DependencyUnavailableError`` naming ``what`` once the deadline or the
    attempt count is exhausted, with the last error chained.
    """
    started = time.monotonic()
    delays = (backoff or Backoff()).delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except retry_on as exc:
            elapsed = time.monotonic() - started
            delay = next(delays)
            out_of_attempts = max_attempts is not None and attempt >= max_attempts
            out_of_time = deadline_s is not None and elapsed + delay > deadline_s
            if out_of_attempts or out_of_time:
                raise DependencyUnavailableError(
                    f"{what} still failing after {attempt} attempts over {elapsed:.1f}s: "
                    f"{type(exc).__name__}: {exc}. Check that it is up and reachable."
                ) from exc
            _log.warning(
                "retrying",
                what=what,
                attempt=attempt,
                delay_s=round(delay, 3),
                error=f"{type(exc).__name__}: {exc}",
            )
            await asyncio.sleep(delay)
