"""Settings of sql-backup (env prefix ``SQL_BACKUP_``, shared blocks under ``INDUTECH_``)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from indutech_common.s3 import MIN_PART_BYTES
from indutech_common.schemas.topics import Topics
from indutech_common.settings import (
    KafkaSettings,
    KeyPrefix,
    OdbcSourceSettings,
    S3Settings,
    WarehouseSettings,
    WorkerSettings,
)

MIB = 1024 * 1024
WORK_TOPIC = "sql.backup-work.v1"
COMPLETED_TOPIC = "sql.backup-completed.v1"
_HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class TableOverride(BaseModel):
    """Per-table choices where the catalogue is not enough (``schema.table`` → override)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: tuple[str, ...] | None = Field(
        default=None, description="key columns for tables without a primary key"
    )
    watermark: str | None = Field(
        default=None, description="change column (rowversion / row_version) if not the default"
    )


class SqlBackupSettings(WorkerSettings):
    service_name: ClassVar[str] = "sql-backup"
    model_config = SettingsConfigDict(env_prefix="SQL_BACKUP_")

    erp: OdbcSourceSettings
    s3: S3Settings
    kafka: KafkaSettings | None = Field(
        default=None, description="needed by plan and worker (the scale-out topics)"
    )
    target: WarehouseSettings | None = Field(
        default=None, description="the database restore writes into (PostgreSQL)"
    )
    backup_prefix: KeyPrefix = Field(
        default="", description="key prefix inside the backup bucket ('' in production)"
    )
    include: tuple[str, ...] = Field(
        default=("*.*",), description="schema.table glob patterns to back up"
    )
    exclude: tuple[str, ...] = Field(default=(), description="schema.table glob patterns to skip")
    tables: dict[str, TableOverride] = Field(
        default_factory=dict, description="per-table key/watermark overrides (JSON)"
    )
    watermark_column: str = Field(
        default="row_version",
        description="default change column: rowversion on SQL Server, trigger-kept on postgres",
    )
    chunk_rows: int = Field(default=250_000, gt=0, description="rows per full-snapshot chunk")
    delta_chunk_rows: int = Field(
        default=250_000,
        gt=0,
        description="changes (upserted rows + deletes) per delta chunk, counted when planned",
    )
    batch_rows: int = Field(default=10_000, gt=0, description="rows per Arrow batch (no LOBs)")
    max_batch_bytes: int = Field(
        default=256 * MIB, ge=MIB, description="memory for one batch's buffers (LOB tables)"
    )
    lob_max_bytes: int = Field(
        default=64 * MIB, gt=0, description="largest LOB value accepted (never truncated)"
    )
    parallel_chunks: int = Field(default=2, gt=0, description="chunks read at once per worker")
    multipart_threshold_bytes: int = Field(
        default=64 * MIB, gt=0, description="parts this large or larger go up as S3 multipart"
    )
    multipart_part_bytes: int = Field(
        default=16 * MIB, ge=MIN_PART_BYTES, description="size of each multipart piece"
    )
    work_topic: str = Field(default=WORK_TOPIC, min_length=1)
    completed_topic: str = Field(default=COMPLETED_TOPIC, min_length=1)
    group_id: str = Field(default="sql-backup", min_length=1, description="Kafka consumer group")
    session_timeout_ms: int = Field(default=30_000, ge=6_000, le=300_000)
    max_poll_interval_ms: int = Field(
        default=3_600_000, gt=0, description="longest a chunk may take before a rebalance"
    )
    delta_at_utc: str = Field(default="02:00", description="nightly delta time, HH:MM UTC")
    announce_grace_s: float = Field(
        default=60.0,
        gt=0,
        description="how long a replica that did not write a manifest waits for its writer's "
        "announcement before sending it itself (the writer may have died in between)",
    )
    schema_drift: Literal["snapshot", "fail"] = Field(
        default="snapshot",
        description="a table whose columns, types or key changed since the run a delta would "
        "continue: 'snapshot' re-reads the whole table as that day's delta (restore takes its "
        "columns from it), 'fail' skips the table with an error until a full is taken",
    )
    fail_on_skipped_table: bool = Field(
        default=True,
        description="a table that cannot be backed up (no key, a key override that is not "
        "unique, drift with SCHEMA_DRIFT=fail, a chunk that failed …) is reported and skipped "
        "while the others go on; true: the run then exits 1 (and the scheduler reports no "
        "success), false: it exits 0 with the skipped tables listed",
    )
    max_attempts: int = Field(
        default=5,
        ge=1,
        description="attempts of a work item that fails by itself (not by an outage) before it "
        "is dead-lettered and its partition moves on; the table's run stays incomplete",
    )
    retry_delay_s: float = Field(
        default=5.0, gt=0, description="pause before a failed work item is tried again"
    )
    dead_letter_topic: str = Field(
        default=Topics.DEAD_LETTER,
        min_length=1,
        description="where work items that failed MAX_ATTEMPTS times go, with the reason",
    )
    idle_exit_s: float | None = Field(
        default=None, description="worker exits 0 after this long without work (batch jobs)"
    )

    @field_validator("delta_at_utc")
    @classmethod
    def _time_shape(cls, value: str) -> str:
        if not _HH_MM.match(value):
            raise ValueError("delta_at_utc is HH:MM in UTC, e.g. 02:00")
        return value

    @model_validator(mode="after")
    def _batch_fits(self) -> Self:
        if self.lob_max_bytes > self.max_batch_bytes:
            raise ValueError("lob_max_bytes must not exceed max_batch_bytes (one row per batch)")
        return self
