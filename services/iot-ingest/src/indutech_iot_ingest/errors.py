"""The exceptions of iot-ingest, in one module."""

from __future__ import annotations

from indutech_common.errors import IndutechError


class IotIngestError(IndutechError):
    """Base of iot-ingest's errors."""


class RejectedLine(IotIngestError):  # noqa: N818 - a verdict on a line, not a failure of ours
    """A line that is not a valid record (it becomes a dead letter, never a crash);
    ``reason`` is a stable kind for metrics."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


class SinkError(IotIngestError):
    """The transactional sink cannot go on."""


class CheckpointTopicMissingError(SinkError):
    """The compacted checkpoint topic does not exist."""
