"""The exceptions of iot-aggregator, in one module."""

from __future__ import annotations

from indutech_common.errors import IndutechError


class AggregatorError(IndutechError):
    """Base of iot-aggregator's errors."""


class InvalidRecordError(AggregatorError):
    """A record of an iot.* topic cannot be aggregated; it is dead-lettered with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class FencedError(AggregatorError):
    """The warehouse no longer holds the offsets a batch continues from: another member
    wrote them (the partition moved) or an earlier commit went through unseen. The batch
    is rolled back whole; the named partitions are re-read from the warehouse offsets."""

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        names = ", ".join(f"{topic}[{partition}]" for topic, partition in partitions)
        super().__init__(
            f"warehouse offsets of {names} moved under this worker; their state is dropped "
            "and they are read again from the warehouse offsets (nothing to do)"
        )
        self.partitions = partitions


class RebuildError(AggregatorError):
    """``rebuild`` cannot run as asked; nothing was written."""


class BadRangeError(RebuildError):
    """--from/--to (or the settings rebuild needs) are wrong: fix the command (exit 2)."""


class LakeBehindError(RebuildError):
    """The lake does not yet hold every record the stream counted: run again later."""
