"""The Grafana dashboard of the seven flows, provisioned by compose.

    make compose-dashboard   (writes deploy/compose/grafana/dashboards/indutech-flows.json)

A row per flow (the seed's flow table), built from metrics-shipper's status rules
(``indutech_metrics_shipper.status.RULES``): the same lag metric and threshold per
flow, the same "no success for a while" age, so Grafana, the status view and the
CloudWatch alarms judge a flow alike. Per flow: throughput (records written per
second), lag against the seed's threshold (drawn as a red line), errors and
dead letters, the age of the last success. Metric names are those of
``indutech_common.metrics.WorkerMetrics`` (and the aggregator's ingestion lag);
tests/unit/deploy/test_grafana.py checks that the JSON in the repository is this
script's output and that every name it queries is one a worker exports.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from indutech_metrics_shipper.status import RULES, FlowRule

UID = "indutech-flows"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
WIDTH = 24


def _target(expr: str, legend: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": "A"}


def _panel(
    kind: str, title: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int]
) -> dict[str, Any]:
    x, y, w, h = grid
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
    }


def _thresholds(steps: list[tuple[str, float | None]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def flow_panels(rule: FlowRule, y: int) -> list[dict[str, Any]]:
    """The row of one flow: throughput, lag, errors, last success."""
    worker = f'worker="{rule.worker}"'
    row: dict[str, Any] = {
        "type": "row",
        "title": f"Flow {rule.flow}: {rule.worker}, {rule.title}",
        "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1},
        "collapsed": False,
        "panels": [],
    }
    y += 1
    throughput = _panel(
        "timeseries",
        f"{rule.worker}: records written / s",
        [
            _target(
                f"sum by (stream) (rate(indutech_records_out_total{{{worker}}}[5m]))", "{{stream}}"
            )
        ],
        (0, y, 6, 7),
    )
    throughput["fieldConfig"] = {"defaults": {"unit": "ops"}, "overrides": []}

    lag = _panel(
        "timeseries",
        f"{rule.worker}: lag (s)"
        + (
            f", seed threshold {rule.lag_threshold_s:g} s"
            if rule.lag_threshold_s
            else ", no seed threshold"
        ),
        [_target(f"max({rule.lag_metric}{{{worker}}})", "lag")],
        (6, y, 6, 7),
    )
    lag_defaults: dict[str, Any] = {"unit": "s"}
    if rule.lag_threshold_s is not None:
        lag_defaults["thresholds"] = _thresholds(
            [("green", None), ("orange", rule.lag_threshold_s / 2), ("red", rule.lag_threshold_s)]
        )
        lag_defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    lag["fieldConfig"] = {"defaults": lag_defaults, "overrides": []}

    errors = _panel(
        "timeseries",
        f"{rule.worker}: errors and dead letters (per 5 min)"
        + (" (the seed: any error alarms)" if rule.errors_are_red else ""),
        [
            _target(
                f"sum by (kind) (increase(indutech_errors_total{{{worker}}}[5m]))",
                "error {{kind}}",
            ),
            _target(
                f"sum by (reason) (increase(indutech_dead_lettered_records_total{{{worker}}}[5m]))",
                "dead letter {{reason}}",
            ),
        ],
        (12, y, 6, 7),
    )
    errors["fieldConfig"] = {"defaults": {"unit": "short", "min": 0}, "overrides": []}

    success = _panel(
        "stat",
        f"{rule.worker}: since the last success",
        [
            _target(
                f"time() - max(indutech_last_success_timestamp_seconds{{{worker}}})",
                "since last success",
            )
        ],
        (18, y, 6, 7),
    )
    success["fieldConfig"] = {
        "defaults": {
            "unit": "s",
            "thresholds": _thresholds([("green", None), ("orange", rule.success_within_s)]),
        },
        "overrides": [],
    }
    success["options"] = {"colorMode": "background", "graphMode": "none", "textMode": "value"}
    return [row, throughput, lag, errors, success]


def dashboard() -> dict[str, Any]:
    """The dashboard JSON (Grafana's dashboard model, schema version 39)."""
    panels: list[dict[str, Any]] = []
    up = _panel(
        "stat",
        "Workers answering /metrics (Prometheus `up`)",
        [_target('up{job="indutech-workers"}', "{{instance}}")],
        (0, 0, WIDTH, 3),
    )
    up["fieldConfig"] = {
        "defaults": {
            "mappings": [
                {"type": "value", "options": {"0": {"text": "down"}, "1": {"text": "up"}}}
            ],
            "thresholds": _thresholds([("red", None), ("green", 1)]),
        },
        "overrides": [],
    }
    up["options"] = {"colorMode": "background", "graphMode": "none", "textMode": "value_and_name"}
    panels.append(up)
    y = 3
    for rule in RULES:
        panels.extend(flow_panels(rule, y))
        y += 8
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": UID,
        "title": "InduTech Flows: the seven flows",
        "description": "Throughput, lag against the seed's thresholds, errors and last success "
        "of each flow (deploy/compose/grafana/dashboard.py)",
        "tags": ["indutech"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
        "templating": {"list": []},
        "annotations": {"list": []},
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
