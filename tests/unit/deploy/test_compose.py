"""deploy/compose agrees with the code and keeps the security the design asks for.

Nothing here starts a container (no Docker engine on our machines): the compose file
is checked against the compose specification's JSON schema, and its wiring against
the workers' settings classes, the topic contract and the certificate script.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from indutech_common.settings import WorkerSettings, load_settings
from indutech_devtools.iam import COMPOSE_BUCKETS, COMPOSE_POLICIES, compose_policy_files
from indutech_identity_sync.config import IdentitySyncSettings
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_ingest.config import IotIngestSettings
from indutech_iot_to_s3.config import IotToS3Settings
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_to_redshift.config import SqlToRedshiftSettings
from tests.support.containers import COMPOSE_DIR, ComposeFile, worker_commands
from tests.support.stack import REPO_ROOT

SCHEMA = COMPOSE_DIR / "schema" / "compose-spec.json"
# The vendored schema is compose-go v2.17.0's schema/compose-spec.json (schema/README.md).
SCHEMA_SHA256 = "49eb9a1e1de41315949f302f8e6221bb42acd6038977f7c0974e38596ec4cdf6"
SETTINGS_BY_COMMAND: dict[str, type[WorkerSettings]] = {
    "iot-ingest": IotIngestSettings,
    "iot-to-s3": IotToS3Settings,
    "iot-aggregator": IotAggregatorSettings,
    "sql-backup": SqlBackupSettings,
    "sql-to-redshift": SqlToRedshiftSettings,
    "identity-sync": IdentitySyncSettings,
    "metrics-shipper": MetricsShipperSettings,
}
COMPOSE = ComposeFile()
WORKERS = COMPOSE.workers()


def _settings_of(service: str) -> type[WorkerSettings]:
    return SETTINGS_BY_COMMAND[COMPOSE.command(service)[0]]


def _block_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds, through ``X | None``; None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        models = [m for a in get_args(annotation) if (m := _block_model(a)) is not None]
        return models[0] if len(models) == 1 else None
    return None


def field_path_exists(model: type[BaseModel], path: str) -> bool:
    """``kafka__tls__ca_file`` names a field of ``model`` (nested blocks joined by ``__``)."""
    current: type[BaseModel] | None = model
    for part in path.lower().split("__"):
        if current is None or part not in current.model_fields:
            return False
        current = _block_model(current.model_fields[part].annotation)
    return True


def unknown_env_names(settings_cls: type[WorkerSettings], env: dict[str, str]) -> list[str]:
    """Env names a worker gets that no field of its settings class reads."""
    prefix = str(settings_cls.model_config["env_prefix"])
    unknown = []
    for name in env:
        if name == "INDUTECH_SECRETS_DIR":
            continue  # read by the settings sources themselves, not a field
        for candidate in (prefix, "INDUTECH_"):
            if name.startswith(candidate):
                if not field_path_exists(settings_cls, name.removeprefix(candidate)):
                    unknown.append(name)
                break
        else:
            unknown.append(name)  # neither prefix: nothing reads it
    return unknown


def _secret_targets(service: str) -> dict[str, str]:
    """``{target file name: compose secret}`` of a service."""
    targets = {}
    for entry in COMPOSE.services[service].get("secrets", []):
        if isinstance(entry, str):
            targets[entry] = entry
        else:
            targets[entry.get("target", entry["source"])] = entry["source"]
    return targets


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--schemafile",
            str(SCHEMA),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestSchema:
    def test_the_vendored_schema_is_compose_gos(self) -> None:
        """Nobody edited the schema by hand: its hash is the one recorded with its source."""
        digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
        assert digest == SCHEMA_SHA256
        assert SCHEMA_SHA256 in (SCHEMA.parent / "README.md").read_text()

    def test_compose_file_is_valid_against_the_compose_specification(self) -> None:
        """What `make lint` runs: PyPI check-jsonschema against the vendored schema."""
        result = _check_jsonschema(COMPOSE.path)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_the_schema_refuses_a_misspelt_key(self, tmp_path: Path) -> None:
        """The check can fail: a typo in a service is an error, not ignored."""
        data = yaml.safe_load(COMPOSE.path.read_text())
        data["services"]["redpanda"]["helthcheck"] = data["services"]["redpanda"].pop("healthcheck")
        bad = tmp_path / "compose.yaml"
        bad.write_text(yaml.safe_dump(data))
        result = _check_jsonschema(bad)
        assert result.returncode == 1
        assert "helthcheck" in result.stdout


class TestWorkers:
    def test_every_worker_of_services_runs_in_compose(self) -> None:
        """Each console script of services/*/pyproject.toml is some compose service's command."""
        built = set(worker_commands())
        assert set(SETTINGS_BY_COMMAND) == built
        commands = {COMPOSE.command(service)[0] for service in WORKERS}
        assert commands == built

    def test_sql_backup_has_its_replicas_and_its_nightly_planner(self) -> None:
        runs = {tuple(COMPOSE.command(s)) for s in WORKERS}
        assert ("sql-backup", "worker") in runs
        assert ("sql-backup", "schedule") in runs

    @pytest.mark.parametrize("service", WORKERS)
    def test_worker_is_hardened_and_probed(self, service: str) -> None:
        spec = COMPOSE.services[service]
        assert spec["image"].startswith("indutech/flows:")
        assert spec["user"] == "10001:10001"
        assert spec["read_only"] is True
        assert spec["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in spec["security_opt"]
        assert any(mount.startswith("/tmp:") for mount in spec["tmpfs"])  # noqa: S108 - the mount
        assert "/readyz" in " ".join(spec["healthcheck"]["test"])
        env = COMPOSE.environment(service)
        assert float(env["INDUTECH_SHUTDOWN_TIMEOUT_S"]) < float(spec["stop_grace_period"][:-1])

    @pytest.mark.parametrize("service", WORKERS)
    def test_every_env_name_and_secret_file_is_a_field_of_the_worker(self, service: str) -> None:
        settings_cls = _settings_of(service)
        assert unknown_env_names(settings_cls, COMPOSE.environment(service)) == []
        for target in _secret_targets(service):
            assert field_path_exists(settings_cls, target), f"{service}: secret {target}"

    @pytest.mark.parametrize("service", WORKERS)
    def test_worker_env_builds_valid_settings(
        self, service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The container's env and secret files, paths re-rooted under tmp_path, load."""
        for name in list(os.environ):
            if name.startswith(("INDUTECH_", "IOT_", "IDENTITY_SYNC_", "SQL_", "METRICS_")):
                monkeypatch.delenv(name)
        mounts = COMPOSE.mounts(service)
        for name, configured in COMPOSE.environment(service).items():
            value = configured
            if configured.startswith("/"):
                local = tmp_path / configured.lstrip("/")
                source = mounts.get(configured)
                if source is not None and source.endswith(".toml"):
                    local.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy((COMPOSE_DIR / source).resolve(), local)
                elif name.endswith(("_DIR", "SAN_DIR")) or configured in mounts:
                    local.mkdir(parents=True, exist_ok=True)
                else:
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_text("-----BEGIN CERTIFICATE-----\n")
                value = str(local)
            monkeypatch.setenv(name, value)
        secrets_dir = Path(os.environ["INDUTECH_SECRETS_DIR"])
        secrets_dir.mkdir(parents=True, exist_ok=True)
        for target, source in _secret_targets(service).items():
            (secrets_dir / target).write_text(f"secret-of-{source}")

        settings = load_settings(_settings_of(service))

        assert settings.health.port == 8080
        kafka = getattr(settings, "kafka", None) or getattr(settings, "audit_kafka", None)
        if COMPOSE.command(service)[0] != "identity-sync" or kafka is not None:
            assert kafka is not None, f"{service} gets no Kafka block"
            assert kafka.security_protocol == "SASL_SSL"
            assert kafka.sasl_mechanism == "SCRAM-SHA-512"
            assert kafka.tls.ca_file is not None
            assert kafka.password is not None
            assert kafka.password.get_secret_value().startswith("secret-of-kafka_")

    @pytest.mark.parametrize("service", WORKERS)
    def test_worker_has_its_own_kafka_user_with_its_own_password(self, service: str) -> None:
        env = COMPOSE.environment(service)
        user = env.get("INDUTECH_KAFKA__USERNAME") or env.get("IDENTITY_SYNC_AUDIT_KAFKA__USERNAME")
        assert user is not None
        init = (COMPOSE_DIR / "redpanda" / "init.sh").read_text()
        (users,) = re.findall(r"^USERS=\(([^)]*)\)", init, flags=re.MULTILINE)
        assert user in users.split()
        secret = f"kafka_{user.replace('-', '_')}_password"
        assert secret in _secret_targets(service).values()
        assert secret in _secret_targets("kafka-init").values()
        assert user != "admin"


S3_WORKERS = [w for w in WORKERS if "INDUTECH_S3__ENDPOINT_URL" in COMPOSE.environment(w)]


class TestS3LeastPrivilege:
    """Each worker reaches MinIO as its own user, whose policy is its deploy/iam one on
    compose's buckets (tests/integration/test_compose_policies.py has MinIO enforce them)."""

    @pytest.mark.parametrize("service", S3_WORKERS)
    def test_worker_has_its_own_minio_user_with_its_policy(self, service: str) -> None:
        env = COMPOSE.environment(service)
        user = env["INDUTECH_S3__ACCESS_KEY_ID"]
        assert service == user or service.startswith(f"{user}-")  # sql-backup-scheduler
        assert (COMPOSE_POLICIES / f"{user}.json").is_file()
        secret = f"minio_{user.replace('-', '_')}_password"
        assert _secret_targets(service).get("s3__secret_access_key") == secret
        assert secret in _secret_targets("minio-init").values()

    def test_make_secrets_makes_every_secret_compose_names(self, tmp_path: Path) -> None:
        subprocess.run(
            ["bash", str(COMPOSE_DIR / "make-secrets.sh"), str(tmp_path)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        named = {Path(entry["file"]).name for entry in COMPOSE.data["secrets"].values()}
        assert named <= {path.name for path in tmp_path.iterdir()}
        users = {COMPOSE.environment(w)["INDUTECH_S3__ACCESS_KEY_ID"] for w in S3_WORKERS}
        assert {f"minio_{user.replace('-', '_')}_password" for user in users} <= named

    def test_only_minio_init_holds_the_root_password(self) -> None:
        holders = {
            name
            for name in COMPOSE.services
            if "minio_root_password" in _secret_targets(name).values()
        }
        assert holders == {"minio", "minio-init"}

    def test_every_policy_has_a_user_and_the_buckets_are_compose_s(self) -> None:
        users = {COMPOSE.environment(w)["INDUTECH_S3__ACCESS_KEY_ID"] for w in S3_WORKERS}
        assert users == {path.stem for path in COMPOSE_POLICIES.glob("*.json")}
        for worker in S3_WORKERS:
            env = COMPOSE.environment(worker)
            buckets = {
                "lake": env["INDUTECH_S3__LAKE_BUCKET"],
                "backup": env["INDUTECH_S3__BACKUP_BUCKET"],
            }
            assert buckets == COMPOSE_BUCKETS

    def test_the_policies_are_deploy_iam_s_current_render(self) -> None:
        assert {
            path.name: path.read_text() for path in COMPOSE_POLICIES.glob("*.json")
        } == compose_policy_files()


class TestDependencies:
    def test_every_long_running_service_has_a_healthcheck(self) -> None:
        one_shot = set(COMPOSE.one_shot())
        missing = [
            name
            for name, spec in COMPOSE.services.items()
            if name not in one_shot and "healthcheck" not in spec
        ]
        assert missing == []

    def test_every_dependency_waits_for_health_or_completion(self) -> None:
        one_shot = set(COMPOSE.one_shot())
        for name, spec in COMPOSE.services.items():
            for dependency, condition in (spec.get("depends_on") or {}).items():
                expected = (
                    "service_completed_successfully"
                    if dependency in one_shot
                    else "service_healthy"
                )
                assert condition == {"condition": expected}, f"{name} -> {dependency}"

    @pytest.mark.parametrize("service", WORKERS)
    def test_workers_wait_for_users_acls_and_topics(self, service: str) -> None:
        depends = COMPOSE.services[service]["depends_on"]
        if COMPOSE.command(service)[0] in ("identity-sync",):
            assert {"samba-corp", "samba-aws", "minio-init"} <= set(depends)
        assert {"kafka-init", "topics"} <= set(depends)


class TestRedpandaSecurity:
    NODE = yaml.safe_load((COMPOSE_DIR / "redpanda" / "redpanda.yaml").read_text())["redpanda"]
    CLUSTER = yaml.safe_load((COMPOSE_DIR / "redpanda" / "bootstrap.yaml").read_text())

    def test_every_kafka_listener_asks_for_sasl_over_tls(self) -> None:
        tls = {entry["name"]: entry for entry in self.NODE["kafka_api_tls"]}
        assert self.NODE["kafka_api"], "no listener"
        for listener in self.NODE["kafka_api"]:
            assert listener["authentication_method"] == "sasl", listener
            entry = tls[listener["name"]]
            assert entry["enabled"] is True
            assert entry["cert_file"] == "/certs/redpanda/server.crt"
            assert entry["key_file"] == "/certs/redpanda/server.key"
            assert entry["truststore_file"] == "/certs/ca.crt"

    def test_the_admin_api_is_tls_with_authentication(self) -> None:
        names = {entry["name"] for entry in self.NODE["admin"]}
        assert {e["name"] for e in self.NODE["admin_api_tls"] if e["enabled"]} == names
        assert self.CLUSTER["admin_api_require_auth"] is True

    def test_sasl_and_authorization_are_on_from_the_first_start(self) -> None:
        assert self.CLUSTER["enable_sasl"] is True
        assert self.CLUSTER["kafka_enable_authorization"] is True
        assert self.CLUSTER["sasl_mechanisms"] == ["SCRAM"]
        assert self.CLUSTER["superusers"] == ["admin"]
        assert self.CLUSTER["auto_create_topics_enabled"] is False
        start = (COMPOSE_DIR / "redpanda" / "start.sh").read_text()
        assert (
            'RP_BOOTSTRAP_USER="admin:$(cat /run/secrets/redpanda_admin_password):SCRAM-SHA-512"'
            in start
        )
        assert "/etc/redpanda/.bootstrap.yaml" in start
        redpanda = COMPOSE.services["redpanda"]
        assert redpanda["entrypoint"] == ["bash", "/compose/redpanda/start.sh"]
        assert "redpanda_admin_password" in redpanda["secrets"]
        assert "rpk.sh" in " ".join(redpanda["healthcheck"]["test"])

    def test_nothing_in_compose_speaks_plaintext_kafka(self) -> None:
        text = COMPOSE.path.read_text()
        assert "PLAINTEXT" not in text
        for service in COMPOSE.services:
            for name, value in COMPOSE.environment(service).items():
                if name.endswith("KAFKA__SECURITY_PROTOCOL"):
                    assert value == "SASL_SSL", f"{service}: {name}"
                if name.endswith("KAFKA__SASL_MECHANISM"):
                    assert value == "SCRAM-SHA-512", f"{service}: {name}"

    def test_topics_come_from_the_contract_command(self) -> None:
        topics = COMPOSE.services["topics"]
        assert topics["command"] == ["python", "-m", "indutech_common.topics", "create"]
        env = COMPOSE.environment("topics")
        assert env["INDUTECH_TOPICS_ENVIRONMENT"] == "local"  # one broker
        assert env["INDUTECH_TOPICS_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["INDUTECH_TOPICS_KAFKA__USERNAME"] == "admin"
        assert _secret_targets("topics") == {"kafka__password": "redpanda_admin_password"}

    def test_every_contract_topic_a_worker_uses_has_acls_in_init(self) -> None:
        from indutech_common.schemas.topics import CONTRACT  # noqa: PLC0415

        init = (COMPOSE_DIR / "redpanda" / "init.sh").read_text()
        for spec in CONTRACT:
            assert f'="{spec.name}"' not in init  # names are assigned bare, not quoted
            assert f"={spec.name}\n" in init, f"{spec.name} has no variable in init.sh"


class TestCertificates:
    def test_the_certificate_names_every_host_a_container_dials(self, tmp_path: Path) -> None:
        """make-certs.sh (the native stack's code) run here: its SANs hold each host."""
        if shutil.which("openssl") is None:
            pytest.skip("openssl is not installed")
        result = subprocess.run(
            ["bash", str(COMPOSE_DIR / "make-certs.sh")],
            env={
                "PATH": os.environ["PATH"],
                "HOME": str(tmp_path),
                "STACK_DIR": str(tmp_path / "state"),
                "STACK_CACHE": str(tmp_path / "cache"),
                "REPO_ROOT": str(REPO_ROOT),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        certs = tmp_path / "state" / "certs"
        sans = subprocess.run(
            [
                "openssl",
                "x509",
                "-in",
                str(certs / "server.crt"),
                "-noout",
                "-ext",
                "subjectAltName",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        dialled = set()
        for service in COMPOSE.services:
            for name, value in COMPOSE.environment(service).items():
                if "://" in value and name.endswith(("_URL", "ENDPOINT_URL")):
                    dialled.add(urlsplit(value).hostname)
                elif name.endswith(("BOOTSTRAP_SERVERS", "__HOST")):
                    dialled.update(server.split(":")[0] for server in value.split(","))
        dialled.discard("127.0.0.1")
        dialled -= {"iot-ingest", "iot-to-s3", "iot-aggregator", "sql-backup", "identity-sync"}
        assert dialled >= {"redpanda", "minio", "postgres", "samba-corp", "samba-aws", "cloudwatch"}
        for host in dialled:
            assert f"DNS:{host}" in sans, host
        for key in (
            "redpanda/server.key",
            "postgres/server.key",
            "minio/private.key",
            "samba/key.pem",
        ):
            assert (certs / key).stat().st_mode & 0o077 == 0, key


class TestTheChecksCanFail:
    def test_a_misspelt_env_name_is_reported(self) -> None:
        env = {
            "IOT_INGEST_SAN_DIRR": "/san",
            "INDUTECH_KAFKA__USERNAM": "x",
            "INDUTECH_S3__CA_FILE": "/certs/ca.crt",
            "IOT_INGEST_KAFKA__TLS__CA_FILE": "/certs/ca.crt",
            "KAFKA_PASSWORD": "x",
        }
        assert unknown_env_names(IotIngestSettings, env) == [
            "IOT_INGEST_SAN_DIRR",
            "INDUTECH_KAFKA__USERNAM",
            "KAFKA_PASSWORD",
        ]

    def test_a_block_the_worker_does_not_have_is_reported(self) -> None:
        """metrics-shipper has no S3 block: giving it S3 settings is drift."""
        assert unknown_env_names(MetricsShipperSettings, {"INDUTECH_S3__SSE": "aws:kms"}) == [
            "INDUTECH_S3__SSE"
        ]
