"""The SAN as a source: its files tailed (``indutech_common.tailing``), lines read in a thread.

A ``Source`` (``read``) and a ``Resource`` (``name``, ``ping``, ``close``): the
worker adopts it, so ``/readyz`` says whether the SAN is mounted and its open
files close at stop. What ``read`` returns is the tailer's lines, parsed by
``LineParser``; the tailer stays reachable (``tailer``) for the checkpoints:
restore at start, mark what a transaction committed, rewind after an abort.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from indutech_common.tailing import FileTailer, Line, SkipReason
from indutech_iot_ingest.config import IotIngestSettings
from indutech_iot_ingest.sources.records import watch_specs

FORGET_CHECK_S = 60.0


class SanSource:
    """Lines of the files under ``san_dir``; the checkpoints of files gone long enough."""

    name = "san"

    def __init__(
        self,
        settings: IotIngestSettings,
        *,
        on_skipped: Callable[[str, SkipReason], None] | None = None,
    ) -> None:
        self._settings = settings
        self.tailer = FileTailer(
            settings.san_dir,
            watch_specs(settings),
            fingerprint_bytes=settings.fingerprint_bytes,
            max_line_bytes=settings.max_line_bytes,
            keep_bytes=settings.dead_letter_keep_bytes,
            gzip_settle_s=settings.gzip_settle_s,
            close_idle_s=settings.close_idle_s,
            tail_settle_s=settings.last_line_settle_s,
            on_skipped=on_skipped,
        )
        # fingerprints of files no scan found for forget_after_s: their checkpoints go
        # (tombstones) in the next transaction
        self.forgotten: list[str] = []
        self._next_forget = time.monotonic()

    async def read(self, max_lines: int | None = None) -> list[Line]:
        """Scan the SAN and read at most ``max_lines`` (``max_batch_records``) lines."""
        limit = self._settings.max_batch_records if max_lines is None else max_lines
        return await asyncio.to_thread(self._scan_and_read, limit)

    def _scan_and_read(self, max_lines: int) -> list[Line]:
        self.tailer.scan()
        now = time.monotonic()
        if now >= self._next_forget:
            forget_after_s = self._settings.forget_after_s
            self._next_forget = now + min(FORGET_CHECK_S, forget_after_s)
            self.forgotten += [
                state.fingerprint for state in self.tailer.forget_unseen(forget_after_s)
            ]
        return self.tailer.read(max_lines)

    async def ping(self) -> None:
        if not await asyncio.to_thread(self._settings.san_dir.is_dir):
            raise FileNotFoundError(
                f"{self._settings.san_dir} is not reachable: check the SAN mount of the pod"
            )

    async def close(self) -> None:
        self.tailer.close()
