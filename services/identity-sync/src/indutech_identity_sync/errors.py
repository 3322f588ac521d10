"""identity-sync's exceptions, all in one module.

``IdentitySyncError`` (an ``IndutechError``) is the base of what the worker raises
on purpose; a cycle that fails with one is retried after a reconnect (a full one
next), only a bad configuration stops the process. ``DnError`` stays a
``ValueError``: a name that does not parse quarantines its object, the cycle goes on.
"""

from __future__ import annotations

from indutech_common.errors import ConfigError, IndutechError


class IdentitySyncError(IndutechError):
    """Base of identity-sync's errors."""


class MappingError(IdentitySyncError, ConfigError):
    """The mapping file is missing, unreadable or invalid (the message names the field)."""


class DirectoryReadError(IdentitySyncError):
    """A search failed (the cycle is abandoned and retried)."""


class DirectoryWriteError(IdentitySyncError):
    """A directory refused a write; the object is quarantined and retried after its backoff."""


class StateError(IdentitySyncError):
    """The persistent anchor state could not be read or written."""


class DnError(ValueError):
    """A DN that cannot be read; the message names it and says what is wrong."""
