"""Errors of the Kafka source."""

from __future__ import annotations

from indutech_common.errors import IndutechError


class SourceError(IndutechError):
    """Base of the Kafka source's errors."""


class InvalidRecordError(SourceError):
    """A record on an iot.* topic did not validate against its schema (it is dead-lettered)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
