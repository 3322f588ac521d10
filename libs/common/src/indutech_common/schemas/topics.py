"""The topic contract of DESIGN.md: every topic the workers meet in, with its settings.

One table, read by ``python -m indutech_common.topics`` (create, check, list), by the
check each worker runs at start, and by the test helpers. A topic the broker made on
its own (auto-creation: one partition, the broker's default retention) is exactly what
this contract exists to refuse: a ``sql.backup-work.v1`` with one partition silently
lets only one replica work.

Partition counts are floors: fewer is mis-configured, more is allowed (partitions can
only be added, and some topics are scaled up on purpose, e.g. the work topic for the
initial 40 TB load). Replication is per environment (:data:`ENVIRONMENTS`).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

DAY_MS: Final = 24 * 60 * 60 * 1000

Environment = Literal["production", "local"]
CleanupPolicy = Literal["delete", "compact"]


class Topics:
    """The contract's topic names (workers take the actual names from their settings)."""

    SENSOR_READINGS: Final = "iot.sensor-readings.v1"
    CLIENT_TICKETS: Final = "iot.client-tickets.v1"
    DEAD_LETTER: Final = "iot.dead-letter.v1"
    INGEST_CHECKPOINTS: Final = "iot.ingest-checkpoints.v1"
    BACKUP_WORK: Final = "sql.backup-work.v1"
    BACKUP_COMPLETED: Final = "sql.backup-completed.v1"
    IDENTITY_CHANGES: Final = "identity.changes.v1"


class Durability(BaseModel):
    """How many copies an environment keeps of every partition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replication_factor: int = Field(gt=0)
    min_insync_replicas: int = Field(gt=0)


ENVIRONMENTS: Final[dict[Environment, Durability]] = {
    # Three brokers: a write acknowledged with acks=all is on two of them, and one
    # broker may be down (rolling upgrade) without stopping producers.
    "production": Durability(replication_factor=3, min_insync_replicas=2),
    # The native stack and compose run one broker.
    "local": Durability(replication_factor=1, min_insync_replicas=1),
}


class TopicSpec(BaseModel):
    """One topic of the contract: what it carries, who uses it, and the settings it needs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    key: str
    value: str
    partitions: int = Field(gt=0, description="the fewest partitions the flows work with")
    cleanup_policy: CleanupPolicy
    retention_ms: int | None = Field(
        default=None, description="the shortest retention allowed (delete topics); -1: forever"
    )
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    why: str = Field(description="why these settings: what breaks without them")

    def configs(self, durability: Durability) -> dict[str, str]:
        """The topic-level configs ``create`` sets."""
        configs = {
            "cleanup.policy": self.cleanup_policy,
            "min.insync.replicas": str(durability.min_insync_replicas),
        }
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        return configs


CONTRACT: Final[tuple[TopicSpec, ...]] = (
    TopicSpec(
        name=Topics.SENSOR_READINGS,
        key="sensor_id",
        value="JSON SensorReading",
        partitions=3,
        cleanup_policy="delete",
        retention_ms=7 * DAY_MS,
        producers=("iot-ingest",),
        consumers=("iot-to-s3", "iot-aggregator"),
        why="partitions bound how many iot-to-s3 replicas share the load; a week of "
        "retention lets the lake writer catch up after an outage (the lake is the record)",
    ),
    TopicSpec(
        name=Topics.CLIENT_TICKETS,
        key="customer_id",
        value="JSON ClientTicket",
        partitions=3,
        cleanup_policy="delete",
        retention_ms=7 * DAY_MS,
        producers=("iot-ingest",),
        consumers=("iot-to-s3", "iot-aggregator"),
        why="as sensor readings",
    ),
    TopicSpec(
        name=Topics.DEAD_LETTER,
        key="source id",
        value="original bytes; headers error, reason, source, offset",
        partitions=1,
        cleanup_policy="delete",
        retention_ms=30 * DAY_MS,
        producers=("iot-ingest", "iot-to-s3", "iot-aggregator", "sql-backup"),
        consumers=("operators",),
        why="kept a month so an operator can read, fix and replay what was refused",
    ),
    TopicSpec(
        name=Topics.INGEST_CHECKPOINTS,
        key="file fingerprint",
        value="JSON file checkpoint (tombstone when the file is forgotten)",
        partitions=1,
        cleanup_policy="compact",
        producers=("iot-ingest",),
        consumers=("iot-ingest",),
        why="compacted, never deleted by age: a checkpoint lost to retention makes "
        "iot-ingest read that file again from the start; one partition is enough (iot-ingest "
        "reads the whole topic at start, and fewer partitions mean fewer transaction markers)",
    ),
    TopicSpec(
        name=Topics.BACKUP_WORK,
        key="schema.table",
        value="JSON work item (one chunk of one plan)",
        partitions=12,
        cleanup_policy="delete",
        retention_ms=14 * DAY_MS,
        producers=("sql-backup plan", "sql-backup-scheduler"),
        consumers=("sql-backup",),
        why="partitions bound how many replicas share a backup (chunks are spread over "
        "them; add partitions before a large initial load); retention outlives a 3-7 day "
        "initial full so no planned chunk expires unread",
    ),
    TopicSpec(
        name=Topics.BACKUP_COMPLETED,
        key="schema.table",
        value="JSON BackupCompleted (manifest location and summary)",
        partitions=1,
        cleanup_policy="delete",
        retention_ms=30 * DAY_MS,
        producers=("sql-backup",),
        consumers=("sql-to-redshift",),
        why="a month of announcements for a loader that was down; the manifests in S3 "
        "remain the record",
    ),
    TopicSpec(
        name=Topics.IDENTITY_CHANGES,
        key="objectGUID",
        value="JSON audit record of each applied change",
        partitions=1,
        cleanup_policy="delete",
        retention_ms=30 * DAY_MS,
        producers=("identity-sync",),
        consumers=("metrics-shipper", "audit"),
        why="optional audit feed (identity-sync publishes it when AUDIT_KAFKA is set)",
    ),
)

_BY_NAME: Final = {spec.name: spec for spec in CONTRACT}


def contract_spec(name: str) -> TopicSpec:
    """The contract's entry for ``name`` (a contract name such as ``iot.dead-letter.v1``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(_BY_NAME)
        raise KeyError(f"{name!r} is not a topic of the contract (known: {known})") from None
