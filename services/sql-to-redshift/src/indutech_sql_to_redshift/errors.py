"""The exceptions of sql-to-redshift, in one module: each says what is wrong and what to do.

A load error is raised inside the (table, night) transaction, so when one is seen nothing of
that night is in the warehouse: fix the cause and run ``load`` (or wait for the next
announcement) again.
"""

from __future__ import annotations

from indutech_common.errors import IndutechError


class SqlToRedshiftError(IndutechError):
    """Base of sql-to-redshift's errors."""


class LoadError(SqlToRedshiftError):
    """A night of a table cannot be applied as it is; nothing of it was written.

    ``kind`` is the ``indutech_errors`` label it is counted under."""

    kind = "load"


class NoBackupError(LoadError):
    """No complete backup (``_manifest.json``) of the table, or of the night asked for."""

    kind = "missing_manifest"


class MissingNightError(LoadError):
    """The next backup of a table does not continue the last night applied: a night is
    missing in between. Nights are never skipped."""

    kind = "missing_night"


class CorruptPartError(LoadError):
    """A Parquet part is missing, or differs from its manifest (SHA-256, rows, columns)."""

    kind = "corrupt_part"


class SchemaDriftError(LoadError):
    """A delta's columns differ from the staged table's: only a full or re-snapshot run may
    change a table's columns (sql-backup re-snapshots a drifted table)."""

    kind = "schema_drift"


class UnloadableValueError(LoadError):
    """A part's column does not load into the staged table's type (the loader names it)."""

    kind = "unloadable_value"


class ReconciliationError(LoadError):
    """The staged rows or money totals differ from the backup's for this night."""

    kind = "reconciliation"


class FencedError(LoadError):
    """Another loader applied a night of this table meanwhile (the ledger moved): this
    transaction was rolled back; the pending nights are computed again."""

    kind = "fenced"


class ModelError(LoadError):
    """A model's refresh failed (e.g. a column it reads is gone from the source table)."""

    kind = "model"
