"""One CloudWatch dashboard of the seven flows, as code (``metrics-shipper dashboard``).

A row per flow: a title with the flow's guarantee and seed threshold, then its
throughput (records out), its lag, and its errors, as Metrics Insights graphs
over the shipped namespace, with the alarm threshold drawn as a horizontal
annotation. Flow 4 has no lag: its graph is the backup's duration (plan to
announcement) against the seed's 2 h.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types_aiobotocore_cloudwatch import CloudWatchClient


@dataclass(frozen=True)
class FlowPanel:
    flow: int
    worker: str
    title: str
    lag_metric: str | None
    lag_threshold_s: float | None
    lag_label: str = "lag (s)"


FLOWS: tuple[FlowPanel, ...] = (
    FlowPanel(1, "iot-ingest", "SAN files → Redpanda (< 1 s)", "indutech_lag_seconds", 300),
    FlowPanel(2, "iot-to-s3", "Redpanda → S3 lake (< 15 min)", "indutech_lag_seconds", 600),
    FlowPanel(
        3,
        "iot-aggregator",
        "Redpanda → warehouse aggregates (10 to 60 s)",
        "indutech_iot_aggregator_ingestion_lag_seconds",
        3600,
    ),
    FlowPanel(
        4,
        "sql-backup",
        "SQL Server → S3 backup (< 24 h)",
        "indutech_sql_backup_backup_duration_seconds",
        2 * 3600,
        lag_label="backup duration (s)",
    ),
    FlowPanel(
        5,
        "sql-to-redshift",
        "S3 backup → warehouse (12 to 24 h)",
        "indutech_sql_to_redshift_lag_seconds",
        1800,
    ),
    FlowPanel(6, "identity-sync", "AD ↔ AWS Managed AD (< 5 s)", "indutech_lag_seconds", 60),
    FlowPanel(7, "metrics-shipper", "metrics → CloudWatch (1 to 5 min)", None, None),
)

WIDTH = 24
ROW_HEIGHT = 6


def body(namespace: str, region: str) -> dict[str, Any]:
    """The dashboard JSON (CloudWatch's DashboardBody schema)."""
    ns = json.dumps(namespace)
    widgets: list[dict[str, Any]] = []
    y = 0
    for panel in FLOWS:
        widgets.append(
            {
                "type": "text",
                "x": 0,
                "y": y,
                "width": WIDTH,
                "height": 1,
                "properties": {"markdown": f"### Flow {panel.flow}: {panel.worker}, {panel.title}"},
            }
        )
        y += 1
        graphs = [
            ("records out", "SUM", "indutech_records_out", None),
            ("errors", "SUM", "indutech_errors", 0.0),
        ]
        if panel.lag_metric is not None:
            graphs.insert(1, (panel.lag_label, "MAX", panel.lag_metric, panel.lag_threshold_s))
        width = WIDTH // len(graphs)
        for index, (label, function, metric, threshold) in enumerate(graphs):
            query = f"SELECT {function}({metric}) FROM {ns} WHERE worker = '{panel.worker}'"  # noqa: S608 - Metrics Insights over constants
            properties: dict[str, Any] = {
                "title": f"{panel.worker}: {label}",
                "region": region,
                "view": "timeSeries",
                "period": 60,
                "metrics": [[{"expression": query, "label": label, "id": f"q{index}"}]],
            }
            if threshold is not None:
                properties["annotations"] = {"horizontal": [{"label": "alarm", "value": threshold}]}
            widgets.append(
                {
                    "type": "metric",
                    "x": index * width,
                    "y": y,
                    "width": width,
                    "height": ROW_HEIGHT - 1,
                    "properties": properties,
                }
            )
        y += ROW_HEIGHT - 1
    return {"widgets": widgets}


async def apply_dashboard(
    client: CloudWatchClient, *, name: str, namespace: str, region: str
) -> list[str]:
    """Put the dashboard (PutDashboard replaces it whole: applying twice is the same)."""
    response = await client.put_dashboard(
        DashboardName=name, DashboardBody=json.dumps(body(namespace, region))
    )
    return [str(m.get("Message", m)) for m in response.get("DashboardValidationMessages", [])]
