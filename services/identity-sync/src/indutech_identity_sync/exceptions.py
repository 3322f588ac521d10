"""Errors of identity-sync."""

from __future__ import annotations

from indutech_common.errors import ConfigError, IndutechError


class IdentitySyncError(IndutechError):
    """Base of identity-sync's errors."""


class MappingError(IdentitySyncError, ConfigError):
    """The mapping file is missing, unreadable or invalid (the message names the field)."""


class DirectoryWriteError(IdentitySyncError):
    """A directory refused a write; the object is retried on the next cycle."""


class StateError(IdentitySyncError):
    """The persistent anchor state could not be read or written."""
