"""The Helm chart (deploy/helm/indutech-flows) is the one source of the Kubernetes
manifests, and what it renders agrees with the code and with least privilege.

Offline only: helm (built by deploy/tools/helm.sh) renders every values file; the
objects are validated against the pinned Kubernetes schemas, each worker's env
against its settings class, its CLI against its args. No cluster starts here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pydantic import BaseModel

from indutech_common.settings import WorkerSettings, load_settings
from indutech_common.topics import TopicsSettings
from indutech_devtools import k8s
from indutech_devtools.iam import IAM_DIR
from indutech_identity_sync.config import IdentitySyncSettings
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_ingest.config import IotIngestSettings
from indutech_iot_to_s3.config import IotToS3Settings
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_to_redshift.config import SqlToRedshiftSettings
from tests.support.stack import REPO_ROOT

# Building helm and kustomize-build without the cache takes ~3 min (`make tools` first).
pytestmark = pytest.mark.timeout(600)

SETTINGS_BY_SERVICE: dict[str, type[WorkerSettings]] = {
    "iot-ingest": IotIngestSettings,
    "iot-to-s3": IotToS3Settings,
    "iot-aggregator": IotAggregatorSettings,
    "identity-sync": IdentitySyncSettings,
    "sql-backup": SqlBackupSettings,
    "sql-to-redshift": SqlToRedshiftSettings,
    "metrics-shipper": MetricsShipperSettings,
}
# What each worker's Secret holds in production (IRSA: no AWS keys), and nothing more.
PROD_SECRET_KEYS = {
    "iot-ingest": {"kafka__password"},
    "iot-to-s3": {"kafka__password"},
    "iot-aggregator": {"kafka__password", "warehouse__password"},
    "sql-backup": {"kafka__password", "erp__password"},
    "sql-to-redshift": {"kafka__password", "warehouse__password"},
    "identity-sync": {"onprem__password", "aws__password"},
    "metrics-shipper": {"kafka__password", "warehouse__password"},
    "indutech-topics": {"kafka__password"},
}
# The endpoints (values-prod network.endpoints) each worker may reach, besides DNS.
PROD_EGRESS = {
    "iot-ingest": {"kafka", "s3", "sts"},
    "iot-to-s3": {"kafka", "s3", "sts"},
    "iot-aggregator": {"kafka", "warehouse", "s3", "sts"},
    "sql-backup": {"kafka", "erp", "s3", "sts"},
    "sql-to-redshift": {"kafka", "warehouse", "s3", "sts"},
    "identity-sync": {"onpremDc", "awsDc", "s3", "sts"},
    "metrics-shipper": {"kafka", "warehouse", "cloudwatch", "sts"},
    "indutech-topics": {"kafka"},
}
SINGLETONS = {"iot-ingest", "identity-sync", "metrics-shipper"}
CONSUMER_GROUP_WORKERS = {"iot-to-s3", "iot-aggregator", "sql-backup"}
# Consumer-group workers of one replica: their topic has one partition (the contract).
ONE_REPLICA_DEPLOYMENTS = {"sql-to-redshift"}
SECRETS_DIR = "/var/run/secrets/indutech"


@pytest.fixture(scope="session")
def helm() -> Path:
    return k8s.helm_binary()


@cache
def _render(helm: Path, environment: str, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return k8s.template(helm, environment, *extra)


def render(helm: Path, environment: str, *extra: str) -> list[dict[str, Any]]:
    return _render(helm, environment, tuple(extra))


def render_error(helm: Path, environment: str, *extra: str) -> str:
    with pytest.raises(k8s.ChartError) as failure:
        k8s.template(helm, environment, *extra)
    return str(failure.value)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def chart_values(environment: str) -> dict[str, Any]:
    """values.yaml with the environment's file merged over it (maps merge, the rest replaces)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            both = isinstance(value, dict) and isinstance(base.get(key), dict)
            out[key] = merge(base[key], value) if both else value
        return out

    defaults = yaml.safe_load((k8s.CHART / "values.yaml").read_text())
    return merge(defaults, yaml.safe_load(k8s.values_file(environment).read_text()))


@dataclass(frozen=True)
class Pod:
    """One pod template of the render: a workload's, a CronJob's or the topics Job's."""

    kind: str
    name: str
    template: dict[str, Any]

    @property
    def spec(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.template["spec"])

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.spec["containers"]
        return cast(dict[str, Any], container)

    @property
    def account(self) -> str:
        return str(self.spec["serviceAccountName"])

    @property
    def service(self) -> str:
        """The package the container runs (its settings class)."""
        args = self.container["args"]
        return (
            "indutech-topics" if args[:3] == ["python", "-m", "indutech_common.topics"] else args[0]
        )


def pods(objects: list[dict[str, Any]]) -> list[Pod]:
    found = []
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
            template = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        found.append(Pod(obj["kind"], obj["metadata"]["name"], template))
    return found


def pod_env(objects: list[dict[str, Any]], pod: Pod) -> dict[str, str]:
    """The env a container starts with: its ConfigMaps, then its own env (fieldRefs: a name)."""
    maps = by_kind(objects, "ConfigMap")
    env: dict[str, str] = {}
    for source in pod.container.get("envFrom", []):
        env |= maps[source["configMapRef"]["name"]]["data"]
    for item in pod.container.get("env", []):
        env[item["name"]] = item.get("value", f"{pod.name}-0")
    return env


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings block a field holds (``KafkaSettings | None`` -> KafkaSettings)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in {typing.Union, types.UnionType}:
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def unknown_names(settings_cls: type[BaseModel], prefix: str, names: list[str]) -> list[str]:
    """Env names with ``prefix`` that no field of the settings reads (a typo is ignored)."""
    unknown = []
    for name in names:
        if not name.startswith(prefix):
            continue
        model: type[BaseModel] | None = settings_cls
        for part in name.removeprefix(prefix).lower().split("__"):
            field = model.model_fields.get(part) if model is not None else None
            if field is None:
                unknown.append(name)
                break
            model = _model_of(field.annotation)
    return unknown


def settings_of(service: str) -> type[WorkerSettings]:
    return TopicsSettings if service == "indutech-topics" else SETTINGS_BY_SERVICE[service]


class TestOfflineValidation:
    """What CI can prove without a cluster: helm, the schemas, the render, the IAM lint."""

    @pytest.mark.parametrize("environment", k8s.ENVIRONMENTS)
    def test_lint_template_and_schemas(self, helm: Path, environment: str) -> None:
        """helm lint --strict passes; every object is valid for each pinned Kubernetes."""
        k8s.lint(helm, environment)
        for version in k8s.KUBERNETES_VERSIONS:
            objects = k8s.template(helm, environment, kube_version=version)
            assert len(pods(objects)) >= len(SETTINGS_BY_SERVICE)
            assert k8s.schema_errors(objects, version) == []

    def test_schema_validation_catches_a_misspelt_field(self, helm: Path) -> None:
        (pod,) = [p for p in pods(render(helm, "prod")) if p.name == "iot-ingest"]
        broken = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "x"},
            "spec": {**pod.spec, "containers": [{**pod.container, "readinesProbe": {}}]},
        }
        (error,) = k8s.schema_errors([broken], k8s.KUBERNETES_VERSIONS[0])
        assert "readinesProbe" in error

    def test_chart_refuses_an_older_kubernetes(self, helm: Path) -> None:
        """CronJob timeZone needs 1.27: helm says so instead of an API server later."""
        error = render_error(helm, "prod", "--kube-version", "1.26.0")
        assert "kubeVersion" in error or "1.27" in error

    def test_deploy_k8s_is_the_chart_rendered(self, helm: Path) -> None:
        """deploy/k8s is generated (make k8s): no second, hand-kept copy can drift."""
        assert k8s.stale_files(k8s.render_files(helm)) == []

    def test_stale_render_is_reported(self, helm: Path, tmp_path: Path) -> None:
        files = k8s.render_files(helm)
        k8s.write_rendered(files, tmp_path)
        (tmp_path / "iot-ingest.yaml").write_text("# edited by hand\n")
        (tmp_path / "old").mkdir()
        (tmp_path / "old" / "deployment.yaml").write_text("kind: Deployment\n")
        assert k8s.stale_files(files, tmp_path) == [
            "not from the chart: old/deployment.yaml",
            "changed: iot-ingest.yaml",
        ]

    def test_kubectl_apply_k_builds_the_charts_objects(self, helm: Path) -> None:
        """The reported `kubectl apply -k deploy/k8s` failure, with kustomize's own API."""
        built = k8s.kustomize_build(k8s.RENDERED)
        assert k8s.identities(built) == k8s.identities(render(helm, "local"))

    def test_kustomize_refuses_a_file_outside_its_folder(self, tmp_path: Path) -> None:
        """What the hand-kept tree did (identity-sync's mapping from services/): refused."""
        (tmp_path / "mapping.toml").write_text("[x]\n")
        inner = tmp_path / "identity-sync"
        inner.mkdir()
        generator = {"name": "m", "files": ["mapping.toml=../mapping.toml"]}
        kustomization = {"resources": [], "configMapGenerator": [generator]}
        (inner / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        with pytest.raises(k8s.ChartError, match="is not in or below"):
            k8s.kustomize_build(inner)

    def test_iam_policies_are_clean(self) -> None:
        policies = sorted(IAM_DIR.glob("*.json"))
        assert {p.stem for p in policies} >= set(SETTINGS_BY_SERVICE)
        assert k8s.iam_findings(policies) == []

    def test_iam_lint_catches_an_object_action_on_a_bucket(self, tmp_path: Path) -> None:
        policy = tmp_path / "bad.json"
        statement = {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b"]}
        policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
        assert [f.issue for f in k8s.iam_findings([policy])] == ["RESOURCE_MISMATCH"]


class TestWorkersAgreeWithTheCode:
    """Every worker that exists is in the chart, with env its settings class reads."""

    def test_every_service_is_a_worker(self) -> None:
        services = {p.name for p in (REPO_ROOT / "services").iterdir() if (p / "src").is_dir()}
        assert services == set(SETTINGS_BY_SERVICE)
        assert set(chart_values("prod")["workers"]) == services

    def test_unknown_names_finds_a_typo(self) -> None:
        names = ["IDENTITY_SYNC_ONPREM__BINDDN", "IDENTITY_SYNC_AWS__URLS", "INDUTECH_X"]
        assert unknown_names(IdentitySyncSettings, "IDENTITY_SYNC_", names) == [
            "IDENTITY_SYNC_ONPREM__BINDDN"
        ]
        assert unknown_names(SqlBackupSettings, "SQL_BACKUP_", ["SQL_BACKUP_KAFKA__USERNAME"]) == []

    @pytest.mark.parametrize("environment", k8s.ENVIRONMENTS)
    def test_env_names_exist_in_the_settings(self, helm: Path, environment: str) -> None:
        """No drift: each name a pod gets is read by its own settings (INDUTECH_* by some)."""
        objects = render(helm, environment)
        classes: list[type[WorkerSettings]] = [*SETTINGS_BY_SERVICE.values(), TopicsSettings]
        problems = []
        for pod in pods(objects):
            names = list(pod_env(objects, pod))
            cls = settings_of(pod.service)
            own = str(cls.model_config["env_prefix"])
            problems += [f"{pod.name}: {n}" for n in unknown_names(cls, own, names)]
            shared = [n for n in names if n.startswith("INDUTECH_") and not n.startswith(own)]
            for name in shared:
                if name == "INDUTECH_SECRETS_DIR":
                    continue
                if all(unknown_names(c, "INDUTECH_", [name]) for c in classes):
                    problems.append(f"{pod.name}: {name} (read by no worker)")
        assert problems == []

    @pytest.mark.parametrize("environment", ["local", "prod"])
    def test_each_pod_builds_valid_settings_from_its_own_secret(
        self,
        helm: Path,
        environment: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Its ConfigMaps, its env and only the Secret keys it mounts make valid settings."""
        objects = render(helm, environment)
        for pod in pods(objects):
            root = tmp_path / pod.name
            env = pod_env(objects, pod)
            for name in list(os.environ):
                if name.startswith(("INDUTECH_", "IOT_", "IDENTITY_SYNC_", "SQL_", "METRICS_")):
                    monkeypatch.delenv(name)
            for name, configured in env.items():
                monkeypatch.setenv(name, self._rerooted(root, name, configured))
            (volume,) = [v for v in pod.spec["volumes"] if v["name"] == "secrets"]
            secrets = root / SECRETS_DIR.lstrip("/")
            for item in volume["secret"]["items"]:
                (secrets / item["path"]).write_text("from-the-secret-volume\n")
            settings = load_settings(settings_of(pod.service))
            assert settings.health.port == 8080
            kafka = getattr(settings, "kafka", None)
            if kafka is not None:
                assert kafka.security_protocol == "SASL_SSL"
                assert kafka.password.get_secret_value() == "from-the-secret-volume"
                assert (
                    kafka.username == env[f"{settings.model_config['env_prefix']}KAFKA__USERNAME"]
                )

    @staticmethod
    def _rerooted(root: Path, name: str, configured: str) -> str:
        """A mounted path (SAN, CA, mapping, secrets, state) made under ``root``."""
        if not configured.startswith("/"):
            return configured
        local = root / configured.lstrip("/")
        if name.endswith("_DIR"):
            local.mkdir(parents=True, exist_ok=True)
        else:
            local.parent.mkdir(parents=True, exist_ok=True)
            if local.name == "mapping.toml":
                shutil.copy(k8s.MAPPING_EXAMPLE, local)
            elif local.suffix == ".crt":
                local.write_text("-----BEGIN CERTIFICATE-----\n")
        return str(local)

    def test_every_command_line_parses(self, helm: Path, tmp_path: Path) -> None:
        """Each container's args reach the real CLI: with no settings it stops at config (2)."""
        for pod in pods(render(helm, "prod")):
            command, *args = pod.container["args"]
            venv_bin = Path(sys.executable).parent
            program = sys.executable if command == "python" else str(venv_bin / command)
            result = subprocess.run(
                [program, *args],
                env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 2, (pod.name, result.stderr)
            assert "invalid configuration" in result.stderr, (pod.name, result.stderr)
            assert "usage:" not in result.stderr


class TestHardening:
    @pytest.mark.parametrize("environment", k8s.ENVIRONMENTS)
    def test_every_pod_is_hardened_probed_and_bounded(self, helm: Path, environment: str) -> None:
        objects = render(helm, environment)
        shutdown = float(
            by_kind(objects, "ConfigMap")["indutech-shared"]["data"]["INDUTECH_SHUTDOWN_TIMEOUT_S"]
        )
        for pod in pods(objects):
            spec, container = pod.spec, pod.container
            assert spec["automountServiceAccountToken"] is False, pod.name
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert "memory" in container["resources"]["limits"]
            assert "cpu" in container["resources"]["requests"]
            labels = pod.template["metadata"]["labels"]
            assert labels["app.kubernetes.io/part-of"] == "indutech-flows"  # the default deny
            if pod.kind in {"CronJob", "Job"}:
                continue  # runs to completion: no probes, no drain deadline
            assert spec["terminationGracePeriodSeconds"] > shutdown, pod.name
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            annotations = pod.template["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == "8080"


class TestLeastPrivilege:
    """One ServiceAccount, IAM role, Secret and NetworkPolicy per worker."""

    def test_one_account_and_role_per_worker(self, helm: Path) -> None:
        objects = render(helm, "prod")
        accounts = by_kind(objects, "ServiceAccount")
        roles = {}
        for pod in pods(objects):
            account = accounts[pod.account]
            assert account["automountServiceAccountToken"] is False
            owner = pod.account
            assert pod.name == owner or pod.name.startswith(f"{owner}-"), (pod.name, owner)
            roles[owner] = (
                account["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
            )
        assert roles.pop("indutech-topics") is None  # Redpanda only: no AWS role
        assert roles == {
            worker: f"arn:aws:iam::123456789012:role/indutech-flows-{worker}"
            for worker in SETTINGS_BY_SERVICE
        }

    def test_each_pod_mounts_only_its_own_secret_keys(self, helm: Path) -> None:
        mounted: dict[str, set[str]] = {}
        for pod in pods(render(helm, "prod")):
            (volume,) = [v for v in pod.spec["volumes"] if v["name"] == "secrets"]
            assert volume["secret"]["secretName"] == f"{pod.account}-secrets"
            keys = {item["key"] for item in volume["secret"]["items"]}
            assert mounted.setdefault(pod.account, keys) == keys
        assert mounted == PROD_SECRET_KEYS

    def test_created_secrets_hold_only_the_keys_of_their_worker(self, helm: Path) -> None:
        given = {
            name: {key: f"{name}/{key}" for key in keys} | {"unused": "never-rendered"}
            for name, keys in PROD_SECRET_KEYS.items()
        }
        sets = ["--set", "secrets.create=true"]
        for name, values in given.items():
            for key, value in values.items():
                sets += ["--set-string", f"secrets.values.{name}.{key}={value}"]
        secrets = by_kind(render(helm, "prod", *sets), "Secret")
        assert {name: set(s["stringData"]) for name, s in secrets.items()} == {
            f"{name}-secrets": keys for name, keys in PROD_SECRET_KEYS.items()
        }
        missing = render_error(helm, "prod", "--set", "secrets.create=true")
        assert "secrets.values." in missing

    def test_default_deny_then_egress_allow_lists(self, helm: Path) -> None:
        objects = render(helm, "prod")
        policies = by_kind(objects, "NetworkPolicy")
        deny = policies.pop("indutech-default-deny")
        assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
        assert "ingress" not in deny["spec"]
        assert "egress" not in deny["spec"]
        endpoints = chart_values("prod")["network"]["endpoints"]
        cidr_owner = {cidr: name for name, e in endpoints.items() for cidr in e["cidrs"]}
        reached: dict[str, set[str]] = {}
        for name, policy in policies.items():
            spec = policy["spec"]
            assert spec["policyTypes"] == ["Ingress", "Egress"]
            dns, *rules = spec["egress"]
            assert {p["port"] for p in dns["ports"]} == {53}
            targets = set()
            for rule in rules:
                for peer in rule["to"]:
                    if "ipBlock" in peer:
                        targets.add(cidr_owner[peer["ipBlock"]["cidr"]])
                    else:
                        targets.add("workers' /metrics")
            owner = name if name in PROD_EGRESS else name.rsplit("-", 2)[0]
            reached.setdefault(owner, set()).update(targets)
        shipper = reached["metrics-shipper"]
        shipper.remove("workers' /metrics")
        assert reached == PROD_EGRESS

    def test_metrics_ingress_only_from_monitoring_and_the_shipper(self, helm: Path) -> None:
        for name, policy in by_kind(render(helm, "prod"), "NetworkPolicy").items():
            ingress = policy["spec"].get("ingress")
            if name == "indutech-default-deny":
                continue
            if name not in SETTINGS_BY_SERVICE:
                assert ingress == [], name  # jobs serve nothing
                continue
            (rule,) = ingress
            assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
            sources = [
                peer.get("namespaceSelector", {}).get("matchLabels")
                or peer["podSelector"]["matchLabels"]
                for peer in rule["from"]
            ]
            assert sources == [
                {"kubernetes.io/metadata.name": "monitoring"},
                {
                    "app.kubernetes.io/name": "metrics-shipper",
                    "app.kubernetes.io/instance": "indutech-flows",
                },
            ]

    def test_iam_policies_match_the_production_values(self) -> None:
        """Buckets, prefixes and KMS key of deploy/iam are the ones values-prod configures."""
        shared = chart_values("prod")["shared"]
        lake, backup = shared["INDUTECH_S3__LAKE_BUCKET"], shared["INDUTECH_S3__BACKUP_BUCKET"]
        expected_s3 = {
            "iot-ingest": {f"{lake}", f"{lake}/dead-letter/iot-ingest/*"},
            "iot-to-s3": {f"{lake}", f"{lake}/iot/*", f"{lake}/_state/iot-to-s3/*"},
            "iot-aggregator": {
                f"{lake}",
                f"{lake}/warehouse-staging/iot-aggregator/*",
                f"{lake}/iot/*",
            },
            "sql-backup": {f"{backup}", f"{backup}/sql-server/*"},
            "sql-to-redshift": {
                f"{backup}",
                f"{backup}/sql-server/*",
                f"{lake}/warehouse-staging/sql-to-redshift/*",
            },
            "identity-sync": {f"{backup}", f"{backup}/identity-sync/*"},
            "metrics-shipper": set(),
            "redshift-copy": {
                f"{lake}",
                f"{lake}/warehouse-staging/iot-aggregator/*",
                f"{lake}/warehouse-staging/sql-to-redshift/*",
                f"{backup}",
                f"{backup}/sql-server/*",
            },
        }
        for name, s3 in expected_s3.items():
            statements = json.loads((IAM_DIR / f"{name}.json").read_text())["Statement"]
            resources = {r for s in statements for r in s["Resource"]}
            actions = {a for s in statements for a in s["Action"]}
            assert {
                r.removeprefix("arn:aws:s3:::") for r in resources if r.startswith("arn:aws:s3")
            } == s3
            kms = {r for r in resources if r.startswith("arn:aws:kms")}
            assert kms == (
                set() if name == "metrics-shipper" else {shared["INDUTECH_S3__KMS_KEY_ID"]}
            )
            cloudwatch = {a for a in actions if a.startswith(("cloudwatch:", "logs:"))}
            assert bool(cloudwatch) == (name == "metrics-shipper"), name
            assert all("*" not in a for a in actions), name

    def test_identity_state_lives_where_its_policy_allows(self) -> None:
        env = chart_values("prod")["workers"]["identity-sync"]["env"]
        backup = chart_values("prod")["shared"]["INDUTECH_S3__BACKUP_BUCKET"]
        assert env["IDENTITY_SYNC_STATE_BUCKET"] == backup
        assert env["IDENTITY_SYNC_STATE_KEY"].startswith("identity-sync/")


class TestWorkloads:
    def test_singletons_are_statefulsets_of_one(self, helm: Path) -> None:
        """One writer each: a StatefulSet never runs two pods of one name, even on a lost node."""
        objects = render(helm, "prod")
        statefulsets = by_kind(objects, "StatefulSet")
        assert set(statefulsets) == SINGLETONS
        assert all(s["spec"]["replicas"] == 1 for s in statefulsets.values())
        (ingest,) = [p for p in pods(objects) if p.name == "iot-ingest"]
        (txn,) = ingest.container["env"]
        assert txn == {
            "name": "IOT_INGEST_TRANSACTIONAL_ID",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
        }

    def test_a_second_replica_of_a_singleton_is_refused(self, helm: Path) -> None:
        error = render_error(helm, "prod", "--set", "workers.identity-sync.replicas=2")
        assert "singleton" in error
        error = render_error(helm, "prod", "--set", "workers.iot-ingest.kind=Deployment")
        assert "StatefulSet" in error

    def test_consumer_group_workers_are_deployments_with_an_hpa(self, helm: Path) -> None:
        objects = render(helm, "prod")
        deployments = by_kind(objects, "Deployment")
        hpas = by_kind(objects, "HorizontalPodAutoscaler")
        assert set(hpas) == CONSUMER_GROUP_WORKERS
        assert set(deployments) == CONSUMER_GROUP_WORKERS | ONE_REPLICA_DEPLOYMENTS
        for name in ONE_REPLICA_DEPLOYMENTS:
            spec = deployments[name]["spec"]
            assert spec["replicas"] == 1
            # the old pod drains before the new one starts: never two loaders at once
            assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 0
        for name, hpa in hpas.items():
            assert hpa["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
            }
            assert "replicas" not in deployments[name]["spec"]  # the HPA owns it

    def test_keda_on_lag_replaces_the_hpa(self, helm: Path) -> None:
        sets = ["--set", "workers.iot-to-s3.keda.enabled=true"]
        error = render_error(helm, "prod", *sets)
        assert "exclude each other" in error
        objects = render(
            helm, "prod", *sets, "--set", "workers.iot-to-s3.autoscaling.enabled=false"
        )
        assert "iot-to-s3" not in by_kind(objects, "HorizontalPodAutoscaler")
        scaled = by_kind(objects, "ScaledObject")["iot-to-s3"]
        triggers = scaled["spec"]["triggers"]
        assert {t["metadata"]["topic"] for t in triggers} == {
            "iot.sensor-readings.v1",
            "iot.client-tickets.v1",
        }
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {"iot-to-s3"}
        auth = by_kind(objects, "TriggerAuthentication")["iot-to-s3"]["spec"]
        assert auth["secretTargetRef"] == [
            {"parameter": "password", "name": "iot-to-s3-secrets", "key": "kafka__password"}
        ]
        assert "ScaledObject" not in {o["kind"] for o in render(helm, "prod")}  # off by default

    def test_every_worker_and_the_planner_have_a_pdb(self, helm: Path) -> None:
        pdbs = by_kind(render(helm, "prod"), "PodDisruptionBudget")
        assert set(pdbs) == {*SETTINGS_BY_SERVICE, "sql-backup-plan-delta"}
        # Production: a drain waits for an operator to move the plant's entry and SSO.
        assert pdbs["iot-ingest"]["spec"]["maxUnavailable"] == 0
        assert pdbs["identity-sync"]["spec"]["maxUnavailable"] == 0
        assert pdbs["sql-backup-plan-delta"]["spec"]["maxUnavailable"] == 0

    def test_nightly_delta_is_planned_by_a_cronjob_at_two_utc(self, helm: Path) -> None:
        cronjobs = by_kind(render(helm, "prod"), "CronJob")
        delta, full = (
            cronjobs["sql-backup-plan-delta"]["spec"],
            cronjobs["sql-backup-plan-full"]["spec"],
        )
        assert (delta["schedule"], delta["timeZone"], delta["suspend"]) == (
            "0 2 * * *",
            "Etc/UTC",
            False,
        )
        assert delta["concurrencyPolicy"] == "Forbid"
        (container,) = delta["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["sql-backup", "plan", "--kind", "delta"]
        assert full["suspend"] is True  # planned on demand: kubectl create job --from=cronjob/…

    def test_metrics_services_and_the_shipper_targets(self, helm: Path) -> None:
        objects = render(helm, "prod")
        services = by_kind(objects, "Service")
        assert set(services) == {f"{w}-metrics" for w in SETTINGS_BY_SERVICE}
        assert all(s["spec"]["clusterIP"] == "None" for s in services.values())
        shipper = by_kind(objects, "ConfigMap")["metrics-shipper"]["data"]
        targets = set(shipper["METRICS_SHIPPER_TARGETS"].split(","))
        assert targets == {f"dns+http://{name}:8080/metrics" for name in services}
        assert set(shipper["METRICS_SHIPPER_LAG_GROUPS"].split(",")) == (
            CONSUMER_GROUP_WORKERS | ONE_REPLICA_DEPLOYMENTS
        )
        (monitor,) = by_kind(objects, "ServiceMonitor").values()
        assert monitor["spec"]["endpoints"][0]["port"] == "http"

    def test_topics_job_is_renamed_with_a_new_image(self, helm: Path) -> None:
        """A Job's pod template is immutable: a new image gets a new Job, not an error."""
        (old,) = by_kind(render(helm, "prod"), "Job")
        (new,) = by_kind(render(helm, "prod", "--set", "image.tag=0.2.0"), "Job")
        assert old != new
        assert old.startswith("indutech-topics-")
        local = by_kind(render(helm, "local"), "ConfigMap")["indutech-topics"]["data"]
        assert local["INDUTECH_TOPICS_ENVIRONMENT"] == "local"


def test_rendered_files_group_objects_by_worker(helm: Path) -> None:
    """deploy/k8s/<worker>.yaml holds that worker's objects only (its CronJobs included)."""
    files = k8s.render_files(helm)
    for worker in SETTINGS_BY_SERVICE:
        names = {
            o["metadata"]["labels"]["app.kubernetes.io/name"]
            for o in _objects(files[f"{worker}.yaml"])
        }
        assert all(n == worker or n.startswith(f"{worker}-") for n in names), names
    kinds = {o["kind"] for o in _objects(files["base.yaml"])}
    assert kinds == {"Namespace", "ConfigMap", "NetworkPolicy"}


def _objects(text: str) -> Iterator[dict[str, Any]]:
    yield from (doc for doc in yaml.safe_load_all(text) if doc)


class TestTools:
    """deploy/tools/*.sh: quick and quiet when cached, a clear message when Go is missing."""

    @pytest.mark.parametrize(
        ("script", "cached"),
        [("helm.sh", "helm-v4.3.2"), ("kustomize.sh", None)],
    )
    def test_cached_binary_is_returned_without_building(
        self, tmp_path: Path, script: str, cached: str | None
    ) -> None:
        if cached is None:  # kustomize-build is cached under the hash of its sources
            cached = k8s.kustomize_binary().name
        binary = tmp_path / cached
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
        result = subprocess.run(  # no Go on PATH: a build would fail
            [str(k8s.HELM_SCRIPT.parent / script)],
            env={"PATH": "/usr/bin:/bin", "INDUTECH_TOOLS_CACHE": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (result.returncode, result.stdout.strip(), result.stderr) == (0, str(binary), "")

    @pytest.mark.parametrize("script", ["helm.sh", "kustomize.sh"])
    def test_missing_go_is_named(self, tmp_path: Path, script: str) -> None:
        result = subprocess.run(
            [str(k8s.HELM_SCRIPT.parent / script)],
            env={"PATH": "/usr/bin:/bin", "INDUTECH_TOOLS_CACHE": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1
        assert "no Go toolchain is on PATH" in result.stderr
