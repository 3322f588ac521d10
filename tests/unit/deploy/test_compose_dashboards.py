"""Prometheus and Grafana in compose see every worker, with the names the workers export."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from indutech_common.metrics import WorkerMetrics
from indutech_metrics_shipper.status import RULES
from tests.support.containers import COMPOSE_DIR, ComposeFile
from tests.support.stack import REPO_ROOT

COMPOSE = ComposeFile()
WORKERS = COMPOSE.workers()
GRAFANA = COMPOSE_DIR / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "indutech-flows.json"
PROMQL_NAME = re.compile(r"\bindutech_[a-z_]+")
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def _panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def _exprs() -> list[str]:
    return [target["expr"] for panel in _panels() for target in panel.get("targets", [])]


def _family(sample_name: str) -> str:
    for suffix in SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name.removesuffix(suffix)
    return sample_name


class TestPrometheus:
    def test_every_worker_service_is_scraped(self) -> None:
        config = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "indutech-workers"]
        targets = {t for static in job["static_configs"] for t in static["targets"]}
        assert targets == {f"{service}:8080" for service in WORKERS}
        assert job["metrics_path"] == "/metrics"

    def test_metrics_shipper_ships_every_worker(self) -> None:
        env = COMPOSE.environment("metrics-shipper")
        targets = set(env["METRICS_SHIPPER_TARGETS"].split(","))
        expected = {f"http://{s}:8080/metrics" for s in WORKERS if s != "metrics-shipper"}
        assert targets == expected | {"http://127.0.0.1:8080/metrics"}


class TestGrafana:
    def test_the_dashboard_in_the_repository_is_the_generators_output(self) -> None:
        result = subprocess.run(
            [sys.executable, str(GRAFANA / "dashboard.py")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=REPO_ROOT,
        )
        assert result.stdout == DASHBOARD.read_text(), (
            "the dashboard is stale: run make compose-dashboard"
        )

    def test_every_metric_it_queries_is_exported_by_a_worker(self) -> None:
        common = {family.name for family in WorkerMetrics("probe").registry.collect()}
        sources = "\n".join(
            path.read_text()
            for root in (REPO_ROOT / "libs" / "common" / "src", *REPO_ROOT.glob("services/*/src"))
            for path in root.rglob("*.py")
        )
        names = {_family(name) for expr in _exprs() for name in PROMQL_NAME.findall(expr)}
        assert names >= {
            "indutech_records_out",
            "indutech_errors",
            "indutech_dead_lettered_records",
            "indutech_lag_seconds",
            "indutech_last_success_timestamp_seconds",
        }
        for name in names:
            assert name in common or f'"{name}"' in sources, f"{name}: no worker exports it"

    def test_a_row_per_flow_with_the_seeds_lag_threshold(self) -> None:
        panels = _panels()
        rows = [p["title"] for p in panels if p["type"] == "row"]
        assert [title.split(":")[0] for title in rows] == [f"Flow {n}" for n in range(1, 8)]
        for rule in RULES:
            (lag,) = [
                p
                for p in panels
                if p["title"].startswith(f"{rule.worker}: lag")
                and any(rule.lag_metric in t["expr"] for t in p["targets"])
            ]
            steps = lag["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
            red = [s["value"] for s in steps if s["color"] == "red"]
            expected = [rule.lag_threshold_s] if rule.lag_threshold_s is not None else []
            assert red == expected, rule.worker
            assert f'worker="{rule.worker}"' in lag["targets"][0]["expr"]

    def test_every_panel_reads_the_provisioned_prometheus(self) -> None:
        datasources = yaml.safe_load(
            (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
        )["datasources"]
        (prometheus,) = datasources
        assert prometheus["url"] == "http://prometheus:9090"
        for panel in _panels():
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == prometheus["uid"]

    def test_grafana_mounts_what_its_provisioning_names(self) -> None:
        provider = yaml.safe_load(
            (GRAFANA / "provisioning" / "dashboards" / "indutech.yaml").read_text()
        )["providers"][0]
        mounts = COMPOSE.mounts("grafana")
        assert Path(mounts[provider["options"]["path"]]) == Path("./grafana/dashboards")
        assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
        home = COMPOSE.environment("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
