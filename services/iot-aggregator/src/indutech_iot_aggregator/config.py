"""Settings of iot-aggregator (env prefix ``IOT_AGGREGATOR_``; shared blocks ``INDUTECH_``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal, Self

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
from indutech_iot_aggregator.sinks.sql import IAM_ROLE, IDENTIFIER
from indutech_iot_aggregator.sinks.staging import S3ParquetStager
from indutech_iot_aggregator.windows import MAX_WINDOW_S, MIN_WINDOW_S

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class IotAggregatorSettings(WorkerSettings):
    service_name: ClassVar[str] = "iot-aggregator"
    model_config = SettingsConfigDict(env_prefix="IOT_AGGREGATOR_")

    kafka: KafkaSettings
    warehouse: WarehouseSettings = WarehouseSettings()
    group_id: str = Field(
        default="iot-aggregator",
        min_length=1,
        description="Kafka consumer group; also the key of its offsets in the warehouse",
    )
    group_instance_id: str | None = Field(
        default=None,
        description="static membership (KIP-345): a restarted pod rejoins without a rebalance",
    )
    session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    sensor_topic: str = Field(default=Topics.SENSOR_READINGS, min_length=1)
    ticket_topic: str = Field(default=Topics.CLIENT_TICKETS, min_length=1)
    dead_letter_topic: str = Field(default=Topics.DEAD_LETTER, min_length=1)
    warehouse_schema: str = Field(
        default="rt", description="schema of the aggregate tables, views and offsets"
    )
    create_schema: bool = Field(
        default=True,
        description="create the schema, tables and views at start if missing (idempotent); "
        "false when a DBA runs 'iot-aggregator migrate' instead",
    )
    window_s: int = Field(
        default=60,
        ge=MIN_WINDOW_S,
        le=MAX_WINDOW_S,
        description="tumbling window size in seconds of event time",
    )
    grace_s: float = Field(
        default=10.0,
        ge=0,
        le=MAX_WINDOW_S,
        description="event-time lateness accepted before a window closes",
    )
    emit_interval_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="provisional upserts of open windows at most this often",
    )
    idle_close_s: float = Field(
        default=30.0,
        gt=0,
        description="a partition that receives nothing for this long (wall clock) closes "
        "every window it holds",
    )
    late_policy: Literal["correction", "dead_letter"] = Field(
        default="correction",
        description="events later than grace: 'correction' upserts them into their closed "
        "window (counted in late_events); 'dead_letter' sends them to the dead-letter topic",
    )
    max_future_s: float = Field(
        default=3600.0,
        gt=0,
        description="events dated further ahead of the wall clock are refused as bad "
        "(a broken clock would otherwise close every window)",
    )
    max_open_keys: int = Field(
        default=100_000,
        gt=0,
        description="window keys held in memory over all partitions: at the cap a write is "
        "forced, and while it fails consumption is paused",
    )
    poll_max_records: int = Field(default=5_000, gt=0, description="records per poll")
    write_timeout_s: float = Field(
        default=60.0, gt=0, description="longest wait for one warehouse transaction"
    )
    s3: S3Settings | None = Field(
        default=None, description="the lake, read by 'rebuild' only (INDUTECH_S3__* applies)"
    )
    lake_prefix: KeyPrefix = Field(
        default="", description="key prefix of the lake inside the lake bucket ('' in production)"
    )
    lake_group_id: str = Field(
        default="iot-to-s3",
        min_length=1,
        description="consumer group of iot-to-s3: 'rebuild' checks the lake holds every "
        "record up to the aggregator's offsets from its committed offsets",
    )
    rebuild_chunk_s: int = Field(
        default=3600,
        gt=0,
        description="'rebuild' works in chunks of this much event time (rounded down to whole "
        "windows, one at least), one warehouse transaction each: only one chunk's lake "
        "records are held in memory, and the stream's writes wait for one chunk at most",
    )
    staging_prefix: KeyPrefix = Field(
        default="warehouse-staging/iot-aggregator/",
        description="Redshift: where the deltas are staged as Parquet in the lake bucket "
        "(under lake_prefix)",
    )
    redshift_iam_role: str | None = Field(
        default=None,
        description="Redshift: the IAM role ARN its COPY uses to read the staged Parquet",
    )
    retry_max_s: float = Field(
        default=10.0, gt=0, description="longest wait between warehouse retries during an outage"
    )

    @field_validator("warehouse_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER.match(value):
            raise ValueError("must be a lower-case SQL identifier (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _topics_differ(self) -> Self:
        if self.sensor_topic == self.ticket_topic:
            raise ValueError("sensor_topic and ticket_topic must differ")
        if self.warehouse.dialect == "redshift":
            if self.s3 is None:
                raise ValueError(
                    "warehouse dialect redshift stages its loads on S3: set the S3 settings "
                    "(INDUTECH_S3__*)"
                )
            if not self.redshift_iam_role or not IAM_ROLE.match(self.redshift_iam_role):
                raise ValueError(
                    "warehouse dialect redshift needs redshift_iam_role: the ARN of the role "
                    "Redshift's COPY assumes to read the staging prefix"
                )
        return self

    def stager_for(self, s3: S3Client) -> S3ParquetStager:
        """Redshift's staging of loads in the lake bucket."""
        if self.s3 is None or self.redshift_iam_role is None:
            raise ValueError("redshift staging needs s3 and redshift_iam_role")
        return S3ParquetStager(
            s3,
            bucket=self.s3.lake_bucket,
            prefix=f"{self.lake_prefix}{self.staging_prefix}",
            iam_role=self.redshift_iam_role,
        )

    @property
    def topics(self) -> tuple[str, str]:
        return (self.sensor_topic, self.ticket_topic)
