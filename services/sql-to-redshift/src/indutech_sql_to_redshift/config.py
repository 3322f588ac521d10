"""Settings of sql-to-redshift (env prefix ``SQL_TO_REDSHIFT_``; shared blocks ``INDUTECH_``)."""

from __future__ import annotations

import re
from typing import ClassVar, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from indutech_common.schemas import Topics
from indutech_common.settings import (
    KafkaSettings,
    KeyPrefix,
    S3Settings,
    WarehouseSettings,
    WorkerSettings,
)

# Only identifiers are interpolated into the SQL: schemas, tables and columns match this.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
IAM_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$")


class SqlToRedshiftSettings(WorkerSettings):
    service_name: ClassVar[str] = "sql-to-redshift"
    model_config = SettingsConfigDict(env_prefix="SQL_TO_REDSHIFT_")

    s3: S3Settings = Field(description="the backup bucket (s3.backup_bucket) sql-backup writes")
    warehouse: WarehouseSettings = WarehouseSettings()
    kafka: KafkaSettings | None = Field(
        default=None, description="needed by 'run' (the sql.backup-completed.v1 consumer group)"
    )
    backup_prefix: KeyPrefix = Field(
        default="", description="key prefix of the backup inside the bucket ('' in production)"
    )
    database: str = Field(
        default="erp", min_length=1, description="the ERP database as the backup names it"
    )
    source_schema: str = Field(
        default="dbo", min_length=1, description="the ERP schema whose tables are loaded"
    )
    tables: tuple[str, ...] = Field(
        default=(),
        description="tables of source_schema to load (JSON list); empty: every table that has "
        "a backup",
    )
    raw_schema: str = Field(
        default="erp_raw",
        description="warehouse schema of the staged copies and the load ledger",
    )
    model_schema: str = Field(
        default="erp", description="warehouse schema of the facts and SCD2 dimensions"
    )
    create_schema: bool = Field(
        default=True,
        description="create the schemas, ledger and model tables at start if missing "
        "(idempotent); false when a DBA runs 'sql-to-redshift migrate' instead",
    )
    completed_topic: str = Field(
        default=Topics.BACKUP_COMPLETED,
        min_length=1,
        description="where sql-backup announces complete runs",
    )
    group_id: str = Field(
        default="sql-to-redshift", min_length=1, description="Kafka consumer group of 'run'"
    )
    session_timeout_ms: int = Field(default=30_000, ge=6_000, le=300_000)
    retry_max_s: float = Field(
        default=60.0, gt=0, description="longest wait between retries during an outage"
    )
    redshift_iam_role: str | None = Field(
        default=None,
        description="Redshift: the IAM role ARN its COPY assumes to read the backup's parts",
    )
    staging_prefix: KeyPrefix = Field(
        default="warehouse-staging/sql-to-redshift/",
        description="Redshift: where COPY's manifest files go in the lake bucket",
    )

    @field_validator("raw_schema", "model_schema", "source_schema")
    @classmethod
    def _is_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError("must be a lower-case SQL identifier (letters, digits, _)")
        return value

    @field_validator("tables")
    @classmethod
    def _tables_are_identifiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [t for t in value if not IDENTIFIER.match(t)]
        if bad:
            raise ValueError(f"not lower-case table names: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _schemas_differ(self) -> Self:
        if self.raw_schema == self.model_schema:
            raise ValueError(
                "raw_schema and model_schema (SQL_TO_REDSHIFT_RAW_SCHEMA, _MODEL_SCHEMA) "
                "must differ"
            )
        if self.warehouse.dialect == "redshift" and (
            not self.redshift_iam_role or not IAM_ROLE.match(self.redshift_iam_role)
        ):
            raise ValueError(
                "warehouse dialect redshift needs redshift_iam_role "
                "(SQL_TO_REDSHIFT_REDSHIFT_IAM_ROLE): the ARN of the role Redshift's COPY "
                "assumes to read the backup bucket"
            )
        return self
