"""Settings of metrics-shipper (env prefix ``METRICS_SHIPPER_``; shared blocks ``INDUTECH_``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from indutech_common.settings import (
    CloudWatchSettings,
    KafkaSettings,
    WarehouseSettings,
    WorkerSettings,
)


def _comma_list(value: object) -> object:
    """A list from the environment: comma-separated (a JSON list also works)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


class MetricsShipperSettings(WorkerSettings):
    """Settings of the shipper; ``log_dir`` and ``log_state_dir`` go together."""

    service_name: ClassVar[str] = "metrics-shipper"
    model_config = SettingsConfigDict(env_prefix="METRICS_SHIPPER_")

    cloudwatch: CloudWatchSettings = CloudWatchSettings()
    namespace: str = Field(
        default="InduTech/Flows", min_length=1, max_length=255, description="CloudWatch namespace"
    )
    targets: CommaList = Field(
        default=(),
        description="comma-separated /metrics URLs; dns+http://name:port/metrics scrapes every "
        "address the name resolves to (a headless Service's pods)",
    )
    kafka: KafkaSettings | None = Field(
        default=None,
        description="the broker whose consumer groups' lag is shipped (unset: no broker lag)",
    )
    lag_groups: CommaList = Field(
        default=(), description="consumer groups whose lag is shipped (empty: every group)"
    )
    warehouse: WarehouseSettings | None = Field(
        default=None,
        description="the warehouse whose query queue is shipped (unset: no queue metric)",
    )
    interval_s: float = Field(
        default=60.0, ge=10, le=300, description="seconds between scrape-and-ship cycles"
    )
    scrape_timeout_s: float = Field(default=10.0, gt=0, le=60, description="per target")
    scrape_ca_file: Path | None = Field(
        default=None, description="CA for https:// targets (the system's when unset)"
    )
    sink: Literal["put_metric_data", "emf"] = Field(
        default="put_metric_data",
        description="how metrics reach CloudWatch: PutMetricData, or Embedded Metric Format log "
        "events through PutLogEvents into emf_log_group (CloudWatch Logs extracts the metrics; "
        "billed as log ingestion instead of per request)",
    )
    emf_log_group: str = Field(
        default="/indutech/metrics",
        min_length=1,
        max_length=512,
        description="the log group of the EMF events (sink=emf)",
    )
    emf_log_stream: str = Field(
        default="metrics-shipper",
        min_length=1,
        max_length=512,
        pattern=r"^[^:*]*$",
        description="the log stream of the EMF events (sink=emf)",
    )
    histogram_mode: Literal["values", "statistics"] = Field(
        default="values",
        description="histograms as Values/Counts per bucket (percentiles in CloudWatch) or "
        "StatisticValues (exact sum and count)",
    )
    dimension_allow: CommaList = Field(
        default=(), description="labels kept as dimensions (empty: every label not denied)"
    )
    dimension_deny: CommaList = Field(
        default=("instance", "pod", "le", "quantile"), description="labels never kept"
    )
    max_series_per_metric: int = Field(
        default=200,
        ge=1,
        description="dimension sets a metric may have; more are counted, not sent",
    )
    buffer_max_datums: int = Field(
        default=200_000,
        ge=1_000,
        description="datums held through a CloudWatch outage; the oldest go first when full",
    )
    buffer_dir: Path | None = Field(
        default=None,
        description="where datums CloudWatch has not accepted yet are kept, so that they "
        "survive a restart or a kill (unset: memory only, a kill loses them); with it, the "
        "counters' state goes to state_file, else to counters.json in this folder",
    )
    buffer_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description="the disk buffer's size on disk; the oldest cycles go first when full",
    )
    alarm_prefix: str = Field(
        default="indutech-",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="name prefix of the alarms `alarms apply` manages",
    )
    dashboard_name: str = Field(
        default="indutech-flows",
        pattern=r"^[A-Za-z0-9_-]{1,255}$",
        description="the CloudWatch dashboard `dashboard` writes",
    )
    alarm_actions: CommaList = Field(
        default=(), description="SNS topic ARNs notified when an alarm fires or clears"
    )
    log_dir: Path | None = Field(
        default=None,
        description="the workers' JSON log files are under this folder (unset: no log shipping)",
    )
    log_patterns: CommaList = Field(
        default=("**/*.log", "**/*.log.[0-9]*"),
        description="globs of the log files under log_dir (rotated names included)",
    )
    log_group: str = Field(
        default="/indutech/flows", min_length=1, max_length=512, description="CloudWatch log group"
    )
    log_flush_s: float = Field(
        default=5.0, gt=0, le=300, description="seconds between two reads of the log files"
    )
    log_state_dir: Path | None = Field(
        default=None,
        description="where the log offsets and the in-flight batch are kept (required with "
        "log_dir; a persistent volume, or each line may be sent again after a pod move)",
    )
    state_file: Path | None = Field(
        default=None,
        description="where counters' last values are kept across restarts (none: a restart "
        "takes older counters as a baseline and never re-sends them)",
    )

    def counters_state_path(self) -> Path | None:
        """Where the counters' last values are kept (none: not kept across restarts)."""
        if self.state_file is not None:
            return self.state_file
        return self.buffer_dir / "counters.json" if self.buffer_dir is not None else None

    def has_something_to_ship(self) -> bool:
        return bool(self.targets or self.log_dir or self.kafka or self.warehouse)

    @model_validator(mode="after")
    def _emf_takes_values(self) -> Self:
        if self.sink == "emf" and self.histogram_mode == "statistics":
            raise ValueError(
                "sink=emf with histogram_mode=statistics: EMF has no statistic-set form; set "
                "histogram_mode=values (percentiles from Values/Counts) or sink=put_metric_data"
            )
        return self

    @model_validator(mode="after")
    def _log_state_with_log_dir(self) -> Self:
        if self.log_dir is not None and self.log_state_dir is None:
            raise ValueError(
                "log_dir is set but log_state_dir is not: set log_state_dir to a folder that "
                "survives restarts, where the log offsets are kept"
            )
        return self
