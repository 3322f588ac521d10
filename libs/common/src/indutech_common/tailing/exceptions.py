"""Errors of the file tailer."""

from __future__ import annotations

from indutech_common.errors import IndutechError


class TailingError(IndutechError):
    """The tailer was misconfigured or met a state it cannot follow."""


class InvalidCheckpointError(TailingError):
    """A stored file checkpoint could not be read back."""
