"""Errors of the Kafka sink."""

from __future__ import annotations

from indutech_common.errors import IndutechError


class SinkError(IndutechError):
    """The transactional sink cannot go on."""


class CheckpointTopicMissingError(SinkError):
    """The compacted checkpoint topic does not exist."""
