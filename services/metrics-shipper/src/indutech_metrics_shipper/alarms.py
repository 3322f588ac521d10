"""The seed's alert table as CloudWatch alarms, applied idempotently.

Each row of the seed's table that a metric of ours can express is one
``AlarmSpec`` below, written against the metrics as the shipper publishes them
(namespace, names, the ``worker`` dimension; broker lag is the shipper's own
``indutech_kafka_consumer_lag_seconds`` per consumer group). Lags and error counts are
Metrics Insights queries (``SELECT MAX(...) ... WHERE worker = '...'``), so one
alarm covers every stream or kind of a worker without naming each dimension
set; the daily file count needs a day of data, which Insights does not query,
so it is metric math over the two lake streams.

``plan`` compares the specs with what CloudWatch has and says, per alarm,
create / update (with the fields that differ) / unchanged; ``apply`` writes
only what differs, so a second apply changes nothing. Alarms with our prefix
that no spec names are reported, never deleted.

Every row of the seed's table is expressed: the backup's duration is sql-backup's
``indutech_sql_backup_backup_duration_seconds`` (plan to announcement, per table),
the loader's lag is sql-to-redshift's ``indutech_sql_to_redshift_lag_seconds`` (per
table); the maximum over the tables is what each alarm compares.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from indutech_common.schemas import Topics

if TYPE_CHECKING:
    from types_aiobotocore_cloudwatch import CloudWatchClient

Comparison = Literal["GreaterThanThreshold", "LessThanThreshold"]
Missing = Literal["breaching", "notBreaching", "ignore", "missing"]


@dataclass(frozen=True)
class AlarmSpec:
    """One alarm: which flow, the seed's rule in words, and how it is measured."""

    slug: str
    flow: int
    rule: str
    comparison: Comparison
    threshold: float
    period_s: int
    evaluation_periods: int
    missing: Missing
    insights: str | None = None  # a Metrics Insights query (FROM is filled in)
    daily_sum_of: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()  # metric, dimensions

    def name(self, prefix: str) -> str:
        return f"{prefix}flow{self.flow}-{self.slug}"


def _query(function: str, metric: str, key: str, value: str) -> str:
    # Metrics Insights, not SQL; every part is one of this module's constants
    return f"SELECT {function}({metric}) FROM {{namespace}} WHERE {key} = '{value}'"  # noqa: S608


def _max_of(metric: str, worker: str) -> str:
    return _query("MAX", metric, "worker", worker)


def _sum_of(metric: str, worker: str) -> str:
    return _query("SUM", metric, "worker", worker)


MINUTE = 60
SEED_ALARMS: tuple[AlarmSpec, ...] = (
    *(
        AlarmSpec(
            f"broker-lag-{group}",
            1,
            f"broker lag > 5 min: consumer group {group} is over 5 min behind Redpanda",
            "GreaterThanThreshold",
            5 * MINUTE,
            MINUTE,
            5,
            "notBreaching",
            insights=_query("MAX", "indutech_kafka_consumer_lag_seconds", "consumer_group", group),
        )
        for group in ("iot-to-s3", "iot-aggregator")  # the workers' default group ids
    ),
    AlarmSpec(
        "s3-write-latency",
        2,
        "S3 write latency > 10 min: the newest record in the lake is over 10 min old",
        "GreaterThanThreshold",
        10 * MINUTE,
        MINUTE,
        5,
        "notBreaching",
        insights=_max_of("indutech_lag_seconds", "iot-to-s3"),
    ),
    AlarmSpec(
        "s3-files-per-day",
        2,
        "< 100 files/day written to the lake (no data at all counts as breaching)",
        "LessThanThreshold",
        100,
        24 * 60 * MINUTE,
        1,
        "breaching",
        daily_sum_of=tuple(
            (
                "indutech_iot_to_s3_objects_written",
                (("stream", topic), ("worker", "iot-to-s3")),
            )
            for topic in (Topics.SENSOR_READINGS, Topics.CLIENT_TICKETS)
        ),
    ),
    AlarmSpec(
        "warehouse-ingestion-lag",
        3,
        "warehouse ingestion lag > 1 h: the aggregates lag the stream by over an hour",
        "GreaterThanThreshold",
        60 * MINUTE,
        5 * MINUTE,
        2,
        "notBreaching",
        insights=_max_of("indutech_iot_aggregator_ingestion_lag_seconds", "iot-aggregator"),
    ),
    AlarmSpec(
        "warehouse-queue",
        3,
        "> 100 queued queries in the warehouse (Redshift WLM; lock waits on PostgreSQL)",
        "GreaterThanThreshold",
        100,
        MINUTE,
        5,
        "notBreaching",
        insights="SELECT MAX(indutech_warehouse_queued_queries) FROM {namespace}",
    ),
    AlarmSpec(
        "backup-errors",
        4,
        "any sql-backup error",
        "GreaterThanThreshold",
        0,
        5 * MINUTE,
        1,
        "notBreaching",
        insights=_sum_of("indutech_errors", "sql-backup"),
    ),
    AlarmSpec(
        "backup-duration",
        4,
        "backup duration > 2 h: a table's last backup took over 2 h from its plan to its "
        "announcement",
        "GreaterThanThreshold",
        2 * 60 * MINUTE,
        5 * MINUTE,
        1,
        "notBreaching",
        insights=_max_of("indutech_sql_backup_backup_duration_seconds", "sql-backup"),
    ),
    AlarmSpec(
        "loader-lag",
        5,
        "loader lag > 30 min: a completed backup waits over 30 min to be in the warehouse",
        "GreaterThanThreshold",
        30 * MINUTE,
        MINUTE,
        5,
        "notBreaching",
        insights=_max_of("indutech_sql_to_redshift_lag_seconds", "sql-to-redshift"),
    ),
    AlarmSpec(
        "loader-errors",
        5,
        "any sql-to-redshift error (a blocked table, a failed reconciliation, an outage)",
        "GreaterThanThreshold",
        0,
        5 * MINUTE,
        1,
        "notBreaching",
        insights=_sum_of("indutech_errors", "sql-to-redshift"),
    ),
    AlarmSpec(
        "ad-sync-lag",
        6,
        "AD sync lag > 1 min: a directory change took over a minute to reach the other side",
        "GreaterThanThreshold",
        MINUTE,
        MINUTE,
        2,
        "notBreaching",
        insights=_max_of("indutech_lag_seconds", "identity-sync"),
    ),
    AlarmSpec(
        "ad-sync-errors",
        6,
        "any identity-sync error",
        "GreaterThanThreshold",
        0,
        5 * MINUTE,
        1,
        "notBreaching",
        insights=_sum_of("indutech_errors", "identity-sync"),
    ),
    AlarmSpec(
        "log-delivery",
        7,
        "log delivery > 5 min: the log files were last delivered over 5 min ago",
        "GreaterThanThreshold",
        5 * MINUTE,
        MINUTE,
        2,
        "notBreaching",
        insights=_max_of("indutech_shipper_log_delivery_seconds", "metrics-shipper"),
    ),
    AlarmSpec(
        "shipper-errors",
        7,
        "any error of the shipper (log delivery failures included)",
        "GreaterThanThreshold",
        0,
        5 * MINUTE,
        1,
        "notBreaching",
        insights=_sum_of("indutech_errors", "metrics-shipper"),
    ),
    AlarmSpec(
        "shipper-stale",
        7,
        "the shipper itself sent nothing for 10 min (missing data is breaching)",
        "LessThanThreshold",
        1,
        5 * MINUTE,
        2,
        "breaching",
        insights=_sum_of("indutech_shipper_datums_sent", "metrics-shipper"),
    ),
)


def desired(
    spec: AlarmSpec, *, prefix: str, namespace: str, actions: Sequence[str] = ()
) -> dict[str, Any]:
    """The PutMetricAlarm parameters of one spec."""
    params: dict[str, Any] = {
        "AlarmName": spec.name(prefix),
        "AlarmDescription": f"flow {spec.flow}: {spec.rule} (InduTech Flows, managed by "
        "metrics-shipper alarms apply)",
        "ComparisonOperator": spec.comparison,
        "Threshold": float(spec.threshold),
        "EvaluationPeriods": spec.evaluation_periods,
        "DatapointsToAlarm": spec.evaluation_periods,
        "TreatMissingData": spec.missing,
        "ActionsEnabled": bool(actions),
        "AlarmActions": list(actions),
        "OKActions": list(actions),
        "Metrics": _metrics(spec, namespace),
    }
    return params


def _metrics(spec: AlarmSpec, namespace: str) -> list[dict[str, Any]]:
    if spec.insights is not None:
        query = spec.insights.format(namespace=json.dumps(namespace))
        return [{"Id": "q", "Expression": query, "Period": spec.period_s, "ReturnData": True}]
    parts: list[dict[str, Any]] = []
    for index, (metric, dimensions) in enumerate(spec.daily_sum_of):
        parts.append(
            {
                "Id": f"m{index}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": metric,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions],
                    },
                    "Period": spec.period_s,
                    "Stat": "Sum",
                },
                "ReturnData": False,
            }
        )
    total = " + ".join(f"FILL(m{i}, 0)" for i in range(len(parts)))
    parts.append({"Id": "total", "Expression": total, "ReturnData": True})
    return parts


@dataclass(frozen=True)
class AlarmChange:
    name: str
    action: Literal["create", "update", "unchanged", "unmanaged"]
    fields: tuple[str, ...] = ()

    def describe(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.action:<9} {self.name}{detail}"


_COMPARED = (
    "AlarmDescription",
    "ComparisonOperator",
    "Threshold",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "TreatMissingData",
    "ActionsEnabled",
    "AlarmActions",
    "OKActions",
    "Metrics",
)


def plan(
    wanted: Iterable[dict[str, Any]], existing: dict[str, dict[str, Any]], *, prefix: str
) -> list[AlarmChange]:
    """What apply would do: per wanted alarm create/update/unchanged; ours nobody wants."""
    changes: list[AlarmChange] = []
    names = set()
    for params in wanted:
        name = params["AlarmName"]
        names.add(name)
        current = existing.get(name)
        if current is None:
            changes.append(AlarmChange(name, "create"))
            continue
        differing = tuple(
            field
            for field in _COMPARED
            if _canonical(field, params.get(field)) != _canonical(field, current.get(field))
        )
        changes.append(AlarmChange(name, "update" if differing else "unchanged", differing))
    for name in sorted(set(existing) - names):
        if name.startswith(prefix):
            changes.append(AlarmChange(name, "unmanaged"))
    return changes


def _canonical(field: str, value: Any) -> str:
    if value is None and field in {"AlarmActions", "OKActions"}:
        value = []
    if field == "Threshold" and value is not None:
        value = float(value)
    if field == "Metrics" and value is not None:
        value = [_metric_query(m) for m in value]
    return json.dumps(value, sort_keys=True, default=str)


def _metric_query(query: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {
        k: query[k] for k in ("Id", "Expression", "Period", "ReturnData") if k in query
    }
    if "MetricStat" in query:
        stat = query["MetricStat"]
        metric = stat["Metric"]
        kept["MetricStat"] = {
            "Namespace": metric["Namespace"],
            "MetricName": metric["MetricName"],
            "Dimensions": sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])),
            "Period": stat["Period"],
            "Stat": stat["Stat"],
        }
    kept.setdefault("ReturnData", True)
    return kept


async def existing_alarms(client: CloudWatchClient, prefix: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    paginator = client.get_paginator("describe_alarms")
    async for page in paginator.paginate(AlarmNamePrefix=prefix, AlarmTypes=["MetricAlarm"]):
        for alarm in page.get("MetricAlarms", []):
            found[alarm["AlarmName"]] = dict(alarm)
    return found


async def apply(
    client: CloudWatchClient,
    *,
    prefix: str,
    namespace: str,
    actions: Sequence[str] = (),
    dry_run: bool = False,
    specs: Sequence[AlarmSpec] = SEED_ALARMS,
) -> list[AlarmChange]:
    """Create or update every spec's alarm that differs; returns what was (or would be) done."""
    wanted = [desired(s, prefix=prefix, namespace=namespace, actions=actions) for s in specs]
    changes = plan(wanted, await existing_alarms(client, prefix), prefix=prefix)
    if not dry_run:
        by_name = {p["AlarmName"]: p for p in wanted}
        for change in changes:
            if change.action in {"create", "update"}:
                await client.put_metric_alarm(**by_name[change.name])
    return changes
