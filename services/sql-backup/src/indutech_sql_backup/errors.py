"""Errors of sql-backup: each says what went wrong and what to do next, never a secret."""

from __future__ import annotations

from indutech_common.errors import DependencyUnavailableError, IndutechError


class SqlBackupError(IndutechError):
    """Base of sql-backup's errors."""


class UnknownTableError(SqlBackupError):
    """A table named on the command line or in an override does not exist in the source."""


class NoKeyError(SqlBackupError):
    """A table has no primary key and no key override: it cannot be chunked or merged."""


class SourceAuthError(SqlBackupError):
    """The source database refused the credentials."""


class SourceUnavailableError(SqlBackupError, DependencyUnavailableError):
    """The source database did not answer."""


class LobTooLargeError(SqlBackupError):
    """A LOB value is larger than ``lob_max_bytes``: raise the limit, nothing is truncated."""


class BackupNotFoundError(SqlBackupError):
    """No complete backup (a manifest) exists for what was asked."""


class PlanMismatchError(SqlBackupError):
    """A work item names a plan that is missing or differs (an older or foreign plan)."""


class VerificationError(SqlBackupError):
    """A part does not match its manifest (count, checksum or bytes)."""


class AnnouncementInterruptedError(SqlBackupError):
    """Shutdown came while waiting to announce a backup: its work item is not committed."""


class ChangeTrackingError(SqlBackupError):
    """The source cannot report a table's changes (Change Tracking off for the table)."""


class UnsupportedTypeError(SqlBackupError):
    """A column's type cannot be backed up exactly: refused before anything is written."""


class RestoreDecodeError(SqlBackupError):
    """A part's column cannot be loaded into its restored type (restore and verify say so)."""
