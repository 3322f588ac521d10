"""Settings of iot-to-s3 (env prefix ``IOT_TO_S3_``, shared blocks under ``INDUTECH_``)."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from indutech_common.schemas import Topics
from indutech_common.settings import KafkaSettings, KeyPrefix, S3Settings, WorkerSettings

MIB = 1024 * 1024
S3_MIN_PART_BYTES = 5 * MIB


class RotationSettings(BaseModel):
    """When a partition's open segment is sealed and written (whichever comes first).

    Sizes are measured on the buffered Arrow columns of the valid records (what
    memory holds, about half the JSON input); the Parquet files are several times
    smaller.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_records: int = Field(default=500_000, gt=0, description="records per segment")
    max_bytes: int = Field(default=64 * MIB, gt=0, description="buffered Arrow bytes per segment")
    max_age_s: float = Field(
        default=300.0, gt=0, description="seconds from a segment's first record to its flush"
    )
    idle_s: float = Field(
        default=30.0, gt=0, description="flush a partition that received nothing for this long"
    )


class IotToS3Settings(WorkerSettings):
    service_name: ClassVar[str] = "iot-to-s3"
    model_config = SettingsConfigDict(env_prefix="IOT_TO_S3_")

    kafka: KafkaSettings
    s3: S3Settings
    group_id: str = Field(default="iot-to-s3", min_length=1, description="Kafka consumer group")
    group_instance_id: str | None = Field(
        default=None,
        description="static membership (KIP-345): a restarted pod rejoins without a rebalance",
    )
    session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    sensor_topic: str = Field(default=Topics.SENSOR_READINGS, min_length=1)
    ticket_topic: str = Field(default=Topics.CLIENT_TICKETS, min_length=1)
    dead_letter_topic: str = Field(default=Topics.DEAD_LETTER, min_length=1)
    lake_prefix: KeyPrefix = Field(
        default="",
        description="key prefix inside the lake bucket ('' in production; 'tests/x/' in tests)",
    )
    rotation: RotationSettings = RotationSettings()
    memory_cap_bytes: int = Field(
        default=256 * MIB,
        gt=0,
        description="buffered Arrow bytes over all partitions: flush early, then pause consumption",
    )
    poll_max_records: int = Field(default=5_000, gt=0, description="records per poll")
    multipart_threshold_bytes: int = Field(
        default=64 * MIB, gt=0, description="Parquet files this large go up in parts"
    )
    multipart_part_bytes: int = Field(default=16 * MIB, ge=S3_MIN_PART_BYTES)
    max_concurrent_uploads: int = Field(default=4, gt=0)
    s3_backoff_max_s: float = Field(
        default=10.0, gt=0, description="longest wait between S3 retries during an outage"
    )
    rebalance_flush_timeout_s: float = Field(
        default=10.0, gt=0, description="on revoke, how long an in-flight flush may finish"
    )

    @model_validator(mode="after")
    def _cap_holds_a_segment(self) -> Self:
        if self.sensor_topic == self.ticket_topic:
            raise ValueError("sensor_topic and ticket_topic must differ")
        if self.memory_cap_bytes < self.rotation.max_bytes:
            raise ValueError(
                "memory_cap_bytes must be at least rotation.max_bytes (one full segment)"
            )
        return self

    @property
    def topics(self) -> tuple[str, str]:
        return (self.sensor_topic, self.ticket_topic)
