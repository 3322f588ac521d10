"""The Kubernetes manifests agree with the code: every worker's Deployment
starts with settings that validate, and keeps the hardening the design asks for.

A typo in an env var name (``IDENTITY_SYNC_ONPREM__BINDDN``) would otherwise
only show as a crash loop after a rollout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from indutech_common.settings import WorkerSettings, load_settings
from indutech_identity_sync.config import IdentitySyncSettings
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_ingest.config import IotIngestSettings
from indutech_iot_to_s3.config import IotToS3Settings
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_sql_backup.config import SqlBackupSettings
from tests.support.stack import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
SETTINGS_BY_WORKER: dict[str, type[WorkerSettings]] = {
    "iot-ingest": IotIngestSettings,
    "iot-to-s3": IotToS3Settings,
    "iot-aggregator": IotAggregatorSettings,
    "identity-sync": IdentitySyncSettings,
    "sql-backup": SqlBackupSettings,
    "metrics-shipper": MetricsShipperSettings,
}
# What the indutech-secrets Secret holds in production, one file per field.
SECRET_FILES = ("kafka__password", "onprem__password", "aws__password", "erp__password")
# base: shared pieces; topics: the Job that creates the topics (tests/unit/test_topics.py)
NOT_WORKERS = {"base", "topics"}
WORKER_DIRS = sorted(p.name for p in K8S.iterdir() if p.is_dir() and p.name not in NOT_WORKERS)


@dataclass(frozen=True)
class Workload:
    """One pod template of a worker folder: a Deployment's, or a CronJob's job."""

    kind: str
    name: str
    template: dict[str, Any]

    @property
    def pod(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.template["spec"])

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        return cast(dict[str, Any], container)


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization(worker: str) -> dict[str, Any]:
    return _documents(K8S / worker / "kustomization.yaml")[0]


def _workloads(worker: str) -> list[Workload]:
    workloads = []
    for resource in _kustomization(worker)["resources"]:
        for doc in _documents(K8S / worker / resource):
            if doc["kind"] in {"Deployment", "StatefulSet"}:
                template = doc["spec"]["template"]
            elif doc["kind"] == "CronJob":
                template = doc["spec"]["jobTemplate"]["spec"]["template"]
            else:
                continue
            workloads.append(Workload(doc["kind"], doc["metadata"]["name"], template))
    return workloads


WORKLOADS = [
    pytest.param(workload, id=f"{worker}/{workload.name}")
    for worker in WORKER_DIRS
    for workload in _workloads(worker)
]


def _unknown_names(settings_cls: type[WorkerSettings], env: dict[str, str]) -> list[str]:
    """Env names with the service's prefix that no settings field reads (a typo is ignored)."""
    prefix = str(settings_cls.model_config["env_prefix"])
    unknown = []
    for name in env:
        if not name.startswith(prefix):
            continue
        model: Any = settings_cls
        for part in name.removeprefix(prefix).lower().split("__"):
            field = model.model_fields.get(part) if model is not None else None
            if field is None:
                unknown.append(name)
                break
            model = field.annotation if isinstance(field.annotation, type) else None
    return unknown


def _configmaps() -> dict[str, dict[str, str]]:
    """Every ConfigMap a container can name: the shared one and each folder's generated ones."""
    (shared,) = _documents(K8S / "base" / "configmap-shared.yaml")
    maps = {shared["metadata"]["name"]: {k: str(v) for k, v in shared["data"].items()}}
    for worker in WORKER_DIRS:
        for generator in _kustomization(worker).get("configMapGenerator", []):
            literals = generator.get("literals", [])
            maps[generator["name"]] = dict(item.split("=", 1) for item in literals)
    return maps


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    maps = _configmaps()
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= maps[source["configMapRef"]["name"]]
    return env | {item["name"]: str(item["value"]) for item in container.get("env", [])}


def test_every_worker_folder_is_known_and_listed_in_the_top_kustomization() -> None:
    top = _documents(K8S / "kustomization.yaml")[0]
    assert set(WORKER_DIRS) == set(SETTINGS_BY_WORKER)
    assert set(top["resources"]) == {*NOT_WORKERS, *WORKER_DIRS}
    for worker in WORKER_DIRS:
        assert any(w.kind == "Deployment" for w in _workloads(worker)), worker


def test_every_workload_runs_as_the_base_service_account() -> None:
    """The ServiceAccount (IRSA role) the pods name is the one base creates."""
    (account,) = _documents(K8S / "base" / "serviceaccount.yaml")
    names = {w.pod["serviceAccountName"] for worker in WORKER_DIRS for w in _workloads(worker)}
    assert names == {account["metadata"]["name"]}


@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload_env_builds_valid_settings(
    workload: Workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMaps plus the container's env, with files where the pod mounts them."""
    worker = workload.container["args"][0]
    assert worker in SETTINGS_BY_WORKER
    env = _container_env(workload.container)

    for name in list(os.environ):
        if name.startswith(("INDUTECH_", "IOT_", "IDENTITY_SYNC_", "SQL_", "METRICS_")):
            monkeypatch.delenv(name)
    for name, configured in env.items():
        value = configured
        if configured.startswith("/"):
            # Mounted paths (SAN share, CA, mapping, secrets) re-rooted under tmp_path.
            local = tmp_path / configured.lstrip("/")
            if name.endswith("_DIR"):
                local.mkdir(parents=True, exist_ok=True)
            else:
                local.parent.mkdir(parents=True, exist_ok=True)
                if local.name == "mapping.toml":
                    shutil.copy(REPO_ROOT / "services/identity-sync/mapping.example.toml", local)
                else:
                    local.write_text("-----BEGIN CERTIFICATE-----\n")
            value = str(local)
        monkeypatch.setenv(name, value)
    secrets_dir = Path(os.environ["INDUTECH_SECRETS_DIR"])
    for secret in SECRET_FILES:
        (secrets_dir / secret).write_text("from-the-secret-volume\n")

    assert _unknown_names(SETTINGS_BY_WORKER[worker], env) == []
    settings = load_settings(SETTINGS_BY_WORKER[worker])

    assert settings.health.port == 8080
    kafka = getattr(settings, "kafka", None)
    if kafka is not None:
        assert kafka.password.get_secret_value() == "from-the-secret-volume"
        assert kafka.security_protocol == "SASL_SSL"


@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload_args_parse(workload: Workload, tmp_path: Path) -> None:
    """The container's args are accepted by the CLI: with no settings it stops at config."""
    command, *args = workload.container["args"]
    script = Path(sys.executable).parent / command
    result = subprocess.run(
        [str(script), *args],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "invalid configuration" in result.stderr, result.stderr
    assert "usage:" not in result.stderr


@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload_is_hardened_and_probed(workload: Workload) -> None:
    pod, container = workload.pod, workload.container
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "memory" in container["resources"]["limits"]
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/var/run/secrets/indutech" in mounts
    labels = workload.template["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "indutech-flows"  # the NetworkPolicy's selector
    if workload.kind == "CronJob":
        return  # a job runs to completion: no probes, no drain deadline
    shutdown_deadline = float(_configmaps()["indutech-shared"]["INDUTECH_SHUTDOWN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > shutdown_deadline
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
