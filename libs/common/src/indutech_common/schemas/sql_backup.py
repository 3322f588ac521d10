"""The sql-backup contracts: its topics' records and the layout of the backup bucket.

Written by sql-backup (flow 4); read by sql-to-redshift and by anyone restoring.

**Topics.** ``BackupCompleted`` (``sql.backup-completed.v1``) announces a run of one
table whose ``_manifest.json`` is written and verified; ``WorkItem``
(``sql.backup-work.v1``) is one chunk of a plan for the replicas. Both start with
the ``BackupEvent`` envelope. The wire format is the one sql-backup has always
sent.

**Bucket.** One directory per (table, day, kind), as DESIGN.md fixes it::

    {prefix}sql-server/{database}.{schema}.{table}/year=YYYY/month=MM/day=DD/{full|delta}/
        _plan.json                     Plan: the chunks and the source position (written first)
        part-{chunk:05d}.parquet       one per chunk; deterministic name, overwritten on redo
        _parts/part-{chunk:05d}.json   PartRecord: the part once uploaded and verified
        _manifest.json                 Manifest: written last, once every part is verified
        _failed/part-{chunk:05d}.json  FailureRecord: a chunk given up on (dead-lettered): no
                                       manifest until a rerun redoes it
        _announced.json                the BackupCompleted sent for the manifest

Only a directory with ``_manifest.json`` is trusted (restore, the next delta,
sql-to-redshift); a plan or parts without it are an unfinished run. A reader takes
everything from the manifest: its plan's columns and key, each part's key, rows,
SHA-256 and stored Arrow columns, and whether a delta holds changes (an ``_op``
column, ``Plan.reads_changes``) or re-reads the whole table (``Plan.snapshot``:
its parts replace the table, with that plan's columns). A delta continues the run
whose ``position_to`` equals its ``position_from``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["full", "delta"]

BACKUP_ROOT: Final = "sql-server"
PLAN_FILE: Final = "_plan.json"
MANIFEST_FILE: Final = "_manifest.json"
ANNOUNCED_FILE: Final = "_announced.json"
PARTS_DIR: Final = "_parts/"
FAILED_DIR: Final = "_failed/"
CHANGE_OP_COLUMN: Final = "_op"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackupEvent(_Model):
    """What every sql-backup message says first: which run of which table."""

    schema_version: int = 1
    event_id: str
    event_time: datetime
    kind: Kind
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


class WorkItem(BackupEvent):
    """One chunk to back up (value of ``sql.backup-work.v1``, key = ``database.schema.table``).

    ``event_id`` is ``{plan_id}:{chunk:05d}``; ``plan_key`` is the plan's object key in the
    backup bucket, and an item whose plan there has another ``plan_id`` is obsolete."""

    chunk: int
    chunks: int
    plan_id: str
    plan_key: str


class ColumnSpec(_Model):
    """A column: its source type in a plan, its stored Arrow type in a part record."""

    name: str
    source_type: str
    nullable: bool
    arrow_type: str | None = None


class ChunkSpec(_Model):
    chunk: int
    lo: str | None = Field(description="exclusive lower bound of the chunk column (None: -inf)")
    hi: str | None = Field(description="inclusive upper bound (None: +inf)")


class Plan(_Model):
    """``_plan.json``: what one run of one table reads, chunk by chunk."""

    version: int = 1
    plan_id: str
    kind: Kind
    database: str
    dialect: str
    schema_name: str
    table: str
    day: date
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...]
    key_from: str
    watermark: str | None
    chunk_column: str
    chunks: tuple[ChunkSpec, ...]
    position_from: str | None = Field(description="where this run starts (the previous end)")
    position_to: str = Field(description="the source position when planned: the next start")
    created_at: datetime
    snapshot: bool = Field(
        default=False,
        description="a delta that re-reads the whole table (the source lost its changes, e.g. "
        "SQL Server after a TRUNCATE, or its columns changed): its parts replace the table "
        "on restore, with this plan's columns",
    )
    snapshot_reason: str | None = Field(
        default=None, description="why a delta re-reads the whole table (None: not said)"
    )

    @property
    def reads_changes(self) -> bool:
        """Parts hold changes with an ``_op`` column (a delta that is not a re-snapshot)."""
        return self.kind == "delta" and not self.snapshot

    @property
    def qualified(self) -> str:
        """``schema.table``."""
        return f"{self.schema_name}.{self.table}"

    @property
    def topic_key(self) -> bytes:
        """The key of this table's messages: ``database.schema.table``."""
        return f"{self.database}.{self.qualified}".encode()


class PartRecord(_Model):
    """``_parts/part-NNNNN.json``: a part uploaded and verified (S3 checked its SHA-256)."""

    plan_id: str
    chunk: int
    key: str
    rows: int
    bytes: int
    checksum: str = Field(description="content checksum of the rows (indutech_sql_backup.checksum)")
    sha256: str = Field(description="SHA-256 of the Parquet object")
    ops: dict[str, int] = Field(default_factory=dict)
    arrow_schema: tuple[ColumnSpec, ...] = ()
    seconds: float = 0.0


class FailureRecord(_Model):
    """``_failed/part-NNNNN.json``: a chunk given up on after ``attempts`` failures; the run
    has no manifest until a rerun (``sql-backup plan`` or ``backup`` again) redoes it."""

    plan_id: str
    chunk: int
    attempts: int
    error: str
    failed_at: datetime
    dead_letter_topic: str | None = None


class Manifest(_Model):
    """``_manifest.json``: a complete, verified run; the only object a reader trusts."""

    version: int = 1
    plan: Plan
    parts: tuple[PartRecord, ...]
    rows: int
    bytes: int
    completed_at: datetime

    @property
    def position_from(self) -> str | None:
        return self.plan.position_from

    @property
    def position_to(self) -> str:
        return self.plan.position_to


def table_root(prefix: str, database: str, schema: str, table: str) -> str:
    """The folder of every run of one table."""
    return f"{prefix}{BACKUP_ROOT}/{database}.{schema}.{table}/"


def is_manifest_key(key: str) -> bool:
    """Whether a listed key is a run's ``_manifest.json`` (the only trusted object)."""
    return key.endswith("/" + MANIFEST_FILE)


class BackupDir:
    """The keys of one (table, day, kind) directory."""

    def __init__(
        self, *, prefix: str, database: str, schema: str, table: str, day: date, kind: Kind
    ) -> None:
        self.day = day
        self.kind = kind
        self.table_root = table_root(prefix, database, schema, table)
        self.base = f"{self.table_root}year={day:%Y}/month={day:%m}/day={day:%d}/{kind}/"

    @classmethod
    def of(cls, prefix: str, plan: Plan) -> BackupDir:
        return cls(
            prefix=prefix,
            database=plan.database,
            schema=plan.schema_name,
            table=plan.table,
            day=plan.day,
            kind=plan.kind,
        )

    def part(self, chunk: int) -> str:
        return f"{self.base}part-{chunk:05d}.parquet"

    def record(self, chunk: int) -> str:
        return f"{self.parts_prefix}part-{chunk:05d}.json"

    def failure(self, chunk: int) -> str:
        return f"{self.failures_prefix}part-{chunk:05d}.json"

    @property
    def parts_prefix(self) -> str:
        return self.base + PARTS_DIR

    @property
    def failures_prefix(self) -> str:
        return self.base + FAILED_DIR

    @property
    def plan(self) -> str:
        return self.base + PLAN_FILE

    @property
    def manifest(self) -> str:
        return self.base + MANIFEST_FILE

    @property
    def announced(self) -> str:
        """Written after sql.backup-completed.v1 was sent for this directory's manifest."""
        return self.base + ANNOUNCED_FILE
