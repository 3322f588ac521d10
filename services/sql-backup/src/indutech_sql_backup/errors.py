"""Errors of sql-backup: each says what went wrong and what to do next, never a secret."""

from __future__ import annotations

from aiohttp import ClientError as HttpClientError
from aiokafka.errors import KafkaError
from botocore.exceptions import BotoCoreError, ClientError

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


class KeyNotUniqueError(NoKeyError):
    """A key override names columns that are not unique (or hold NULLs) in the table."""


class SchemaDriftError(SqlBackupError):
    """A table's columns or key changed since the run a delta would continue."""


class NoChangeColumnError(SqlBackupError):
    """A delta was asked of a table without a change column (rowversion / row_version)."""


def environment_error(exc: BaseException) -> bool:
    """Whether a failure is the environment's, not the work's: a dependency that did not
    answer, refused the credentials, or a shutdown. The same work succeeds once it is back,
    so such failures are retried without limit and never dead-lettered or blamed on a
    table; everything else (an SQL error of the table, a value that does not fit, a
    malformed work item) is the work's own."""
    return isinstance(
        exc,
        DependencyUnavailableError
        | SourceAuthError
        | AnnouncementInterruptedError
        | OSError  # ConnectionError, TimeoutError, a full temporary disk
        | BotoCoreError
        | ClientError
        | HttpClientError
        | KafkaError,
    )


class UnsupportedTypeError(SqlBackupError):
    """A column's type cannot be backed up exactly: refused before anything is written."""


class RestoreDecodeError(SqlBackupError):
    """A part's column cannot be loaded into its restored type (restore and verify say so)."""
