"""Why a line was refused (each becomes a dead letter, never a crash)."""

from __future__ import annotations

from indutech_common.errors import IndutechError


class RejectedLine(IndutechError):  # noqa: N818 - a verdict on a line, not a failure of ours
    """A line that is not a valid record; ``reason`` is a stable kind for metrics."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error
