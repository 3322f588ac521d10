"""The testcontainers provider's wiring, without Docker: which services, which settings.

``INDUTECH_TEST_STACK=containers`` is never run in this project's CI (no Docker
engine answers on its machines); these tests check what it would start and the
settings it would hand the tests, all read from deploy/compose.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.containers import (
    COMPOSE_DIR,
    ComposeFile,
    ComposeWiringError,
    ContainersStack,
    PortMapping,
    docker_answers,
    stack_env,
    write_env_file,
)
from tests.support.stack import StackSettings

BACKING = {"redpanda", "minio", "postgres", "samba-corp", "samba-aws", "cloudwatch"}


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    """The secret files compose names, made by its own script into a folder of this test."""
    folder = tmp_path / "secrets"
    subprocess.run(
        ["bash", str(COMPOSE_DIR / "make-secrets.sh"), str(folder)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return folder


class TestServices:
    def test_it_starts_the_backing_services_of_compose(self) -> None:
        assert set(ComposeFile().backing_services()) == BACKING

    def test_set_up_runs_after_certs_in_dependency_order(self) -> None:
        order = ComposeFile().setup_order()
        assert order[0] == "certs"
        assert set(order) == {"certs", "kafka-init", "topics", "minio-init"}

    def test_a_cycle_among_set_up_services_is_refused(self, tmp_path: Path) -> None:
        data = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
        done = {"condition": "service_completed_successfully"}
        data["services"]["certs"]["depends_on"] = {"topics": done}
        data["services"]["topics"]["depends_on"] = {"certs": done}
        path = tmp_path / "compose.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ComposeWiringError, match="cycle"):
            ComposeFile(path).setup_order()

    def test_docker_compose_is_told_the_services_and_its_own_project(self) -> None:
        stack = ContainersStack(project="indutech-tests-unit")
        compose = stack.docker_compose()
        assert compose.context == str(COMPOSE_DIR)
        assert compose.compose_file_name == ["compose.yaml"]
        assert set(compose.services or []) == BACKING
        assert compose.build is True
        assert compose.wait is True
        assert compose.keep_volumes is False
        assert compose.compose_command_property[1:] == [
            "compose",
            "-f",
            "compose.yaml",
            "--project-name",
            "indutech-tests-unit",
        ]

    def test_set_up_copies_the_ca_then_runs_each_one_shot_service(self, tmp_path: Path) -> None:
        stack = ContainersStack(project="p")
        compose = stack.docker_compose()
        base = compose.compose_command_property
        commands = stack.setup_commands(compose, tmp_path)
        assert commands[0] == [
            *base,
            "cp",
            "certs:/state/certs/ca.crt",
            str(tmp_path / "certs/ca.crt"),
        ]
        ran = [command[len(base) :] for command in commands[1:]]
        assert sorted(ran) == sorted(
            ["run", "--rm", "--no-deps", name] for name in ("kafka-init", "topics", "minio-init")
        )

    def test_the_ca_path_is_where_make_certs_writes_it(self) -> None:
        certs = ComposeFile().services["certs"]
        assert "certs:/state/certs" in certs["volumes"]
        assert "STACK_DIR=/state" in " ".join(certs["command"])


class TestSettings:
    def test_the_tests_get_the_same_settings_type_as_from_the_native_stack(
        self, secrets: Path, tmp_path: Path
    ) -> None:
        compose = ComposeFile(secrets_dir=secrets)
        env = stack_env(compose, tmp_path / "stack")
        settings = StackSettings(_env_file=write_env_file(env, tmp_path / "stack.env"))

        assert settings.kafka.bootstrap_servers == "localhost:9093"
        assert settings.kafka.security_protocol == "SASL_SSL"
        assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
        assert settings.kafka.username == "admin"
        assert settings.kafka.password is not None
        assert settings.kafka.password.get_secret_value() == (
            (secrets / "redpanda_admin_password").read_text()
        )
        assert settings.s3.endpoint_url == "https://localhost:9000"
        assert settings.s3.sse == "aws:kms"
        assert settings.s3.kms_key_id == "indutech-local"
        assert settings.warehouse.sslmode == "verify-full"
        assert (settings.warehouse.host, settings.warehouse.port) == ("localhost", 5432)
        assert settings.erp.odbc_driver == "PostgreSQL Unicode"
        assert settings.erp.database == "erp"
        assert settings.ad_onprem.url == "ldaps://localhost:6361"
        assert settings.ad_aws.url == "ldaps://localhost:6362"
        assert settings.ad_aws.base_dn == "DC=aws,DC=indutech,DC=test"
        assert settings.ad_onprem.password.get_secret_value().startswith("Aa1_")
        assert settings.cloudwatch.endpoint_url == "https://localhost:4566"
        assert settings.ca_file == tmp_path / "stack" / "certs" / "ca.crt"
        assert settings.kafka.tls.ca_file == settings.ca_file

    def test_the_env_file_is_private(self, secrets: Path, tmp_path: Path) -> None:
        env = stack_env(ComposeFile(secrets_dir=secrets), tmp_path)
        path = write_env_file(env, tmp_path / "stack.env")
        assert path.stat().st_mode & 0o077 == 0

    def test_missing_secrets_name_the_script_that_makes_them(self, tmp_path: Path) -> None:
        with pytest.raises(ComposeWiringError, match=r"make-secrets\.sh"):
            stack_env(ComposeFile(secrets_dir=tmp_path / "none"), tmp_path)

    def test_a_published_port_that_redpanda_does_not_advertise_is_refused(
        self, secrets: Path, tmp_path: Path
    ) -> None:
        data = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
        data["services"]["redpanda"]["ports"] = ["127.0.0.1:19093:19093"]
        path = tmp_path / "compose.yaml"
        path.write_text(yaml.safe_dump(data))
        shutil.copytree(COMPOSE_DIR / "redpanda", tmp_path / "redpanda")
        with pytest.raises(ComposeWiringError, match="advertises 9093"):
            stack_env(ComposeFile(path, secrets_dir=secrets), tmp_path)

    def test_port_mappings_parse(self) -> None:
        assert PortMapping.parse("127.0.0.1:9093:19093") == PortMapping("127.0.0.1", 9093, 19093)
        assert PortMapping.parse("5432:5432/tcp") == PortMapping(None, 5432, 5432)


class TestEngine:
    def test_no_engine_answers_here(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """What makes the fixture skip: DOCKER_HOST at a socket nobody listens on."""
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
        assert docker_answers() is False


class TestMounts:
    def test_volumes_with_an_interpolated_source_are_read(self) -> None:
        mounts = ComposeFile().mounts("iot-ingest")
        assert mounts == {"/certs": "certs", "/san": "${INDUTECH_SAN_DIR:-san}"}
