"""The records of the ``sql.backup-*`` topics.

``BackupCompleted`` is the contract between sql-backup (the producer) and
sql-to-redshift (a consumer): a run of one table whose ``_manifest.json`` is
written and verified. ``BackupEvent`` is the envelope shared with sql-backup's
own work items. The wire format is the one sql-backup has always sent; the
consumer reads the manifest (by its URL) for the parts, the columns and whether
a delta re-reads the whole table (``plan.snapshot``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict


class BackupEvent(BaseModel):
    """What every sql-backup message says first: which run of which table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    event_id: str
    event_time: datetime
    kind: Literal["full", "delta"]
    database: str
    table: str
    day: date


class BackupCompleted(BackupEvent):
    """A verified run (value of ``sql.backup-completed.v1``, key = ``database.schema.table``).

    ``event_id`` and ``manifest`` are both the manifest's URL: an announcement may be
    sent twice (at least once), consumers dedupe by it."""

    manifest: str
    rows: int
    bytes: int
    parts: int
    position_from: str | None
    position_to: str
