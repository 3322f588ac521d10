"""The testcontainers provider: the tests' services from deploy/compose/compose.yaml.

``INDUTECH_TEST_STACK=containers`` (where a Docker engine answers) starts compose's
backing services (Redpanda, MinIO, PostgreSQL, the two Samba DCs, moto, and the
one-shot set-up services: certificates, Kafka users and ACLs, topics, buckets)
through testcontainers' ``DockerCompose``, and gives the tests the same
``StackSettings`` as the native stack's ``stack.env``. Nothing here repeats an
image, a port or a password: the services, the published ports, the users and
the secret files are read from compose.yaml and its files, so the compose stack
and the tests' stack are one definition.

Not run in this project's CI: no Docker engine answers on its machines. The
wiring (which services, which settings) is unit-tested in
tests/unit/deploy/test_containers_provider.py without starting anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import yaml
from testcontainers.compose import DockerCompose

from tests.support.stack import REPO_ROOT, StackSettings

COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
REDPANDA_NODE_CONFIG = COMPOSE_DIR / "redpanda" / "redpanda.yaml"
# Services the tests never talk to: the dashboards (compose users look at them).
DASHBOARDS = frozenset({"prometheus", "grafana"})
# The names the stack's certificate holds for the host side (deploy/local/components/certs.sh).
HOST = "localhost"
# A short-syntax volume: SOURCE:TARGET[:MODE]; the source may hold ${VAR:-default}.
VOLUME = re.compile(r"^(?P<source>.+?):(?P<target>/[^:]*)(?::(?P<mode>[a-z,]+))?$")


class ComposeWiringError(RuntimeError):
    """compose.yaml does not say what the provider needs (a port, a user, a secret)."""


def worker_commands(repo_root: Path = REPO_ROOT) -> frozenset[str]:
    """The console scripts of every service in services/ (what a worker container runs)."""
    commands: set[str] = set()
    for pyproject in sorted((repo_root / "services").glob("*/pyproject.toml")):
        scripts = tomllib.loads(pyproject.read_text())["project"].get("scripts", {})
        commands.update(scripts)
    return frozenset(commands)


@dataclass(frozen=True)
class PortMapping:
    host_ip: str | None
    host_port: int
    container_port: int

    @classmethod
    def parse(cls, text: str) -> PortMapping:
        """``[IP:]HOST:CONTAINER`` (the short syntax compose.yaml uses)."""
        *ip, host, container = str(text).split(":")
        return cls(ip[0] if ip else None, int(host), int(container.split("/")[0]))


@dataclass(frozen=True)
class ComposeFile:
    """compose.yaml read as data (YAML merge keys resolved), and what the tests need of it."""

    path: Path = COMPOSE_FILE
    # Where the secret files are read (default: where compose.yaml names them; tests
    # point it at a folder of their own).
    secrets_dir: Path | None = None

    @cached_property
    def data(self) -> dict[str, Any]:
        return cast(dict[str, Any], yaml.safe_load(self.path.read_text()))

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return cast(dict[str, dict[str, Any]], self.data["services"])

    def command(self, service: str) -> list[str]:
        command = self.services[service].get("command", [])
        return [command] if isinstance(command, str) else [str(part) for part in command]

    def workers(self) -> list[str]:
        """Services that run a worker of services/ (by their command)."""
        commands = worker_commands()
        return [
            name
            for name in self.services
            if self.command(name)[:1] and self.command(name)[0] in commands
        ]

    def one_shot(self) -> list[str]:
        """Set-up services: something waits for them with service_completed_successfully."""
        names: list[str] = []
        for service in self.services.values():
            for name, condition in (service.get("depends_on") or {}).items():
                if (
                    condition.get("condition") == "service_completed_successfully"
                    and name not in names
                ):
                    names.append(name)
        return names

    def backing_services(self) -> list[str]:
        """The long-running services the tests use: no worker, set-up or dashboard."""
        skip = {*self.workers(), *self.one_shot(), *DASHBOARDS}
        return [name for name in self.services if name not in skip]

    def setup_order(self) -> list[str]:
        """The one-shot services in an order that meets their depends_on (certs first)."""
        pending = self.one_shot()
        ordered: list[str] = []
        while pending:
            ready = [
                name
                for name in pending
                if not (set(self.services[name].get("depends_on") or {}) & set(pending) - {name})
            ]
            if not ready:
                raise ComposeWiringError(
                    f"one-shot services depend on each other in a cycle: {pending}"
                )
            ordered.extend(ready)
            pending = [name for name in pending if name not in ready]
        return ordered

    def published(self, service: str, container_port: int) -> PortMapping:
        for text in self.services[service].get("ports", []):
            mapping = PortMapping.parse(text)
            if mapping.container_port == container_port:
                return mapping
        raise ComposeWiringError(
            f"compose.yaml publishes no host port for {service}:{container_port}; "
            "the tests on the host need one (add it under the service's ports)"
        )

    def mounts(self, service: str) -> dict[str, str]:
        """``{target in the container: source}`` of a service's short-syntax volumes."""
        found = {}
        for text in self.services[service].get("volumes", []):
            match = VOLUME.match(str(text))
            if match is None:
                raise ComposeWiringError(f"{service}: cannot read the volume {text!r}")
            found[match["target"]] = match["source"]
        return found

    def environment(self, service: str) -> dict[str, str]:
        env = self.services[service].get("environment") or {}
        return {str(key): str(value) for key, value in env.items()}

    def secret_file(self, name: str) -> Path:
        """The host file behind a compose secret."""
        return (self.path.parent / str(self.data["secrets"][name]["file"])).resolve()

    def secret(self, name: str) -> str:
        file = self.secret_file(name)
        if self.secrets_dir is not None:
            file = self.secrets_dir / file.name
        if not file.is_file():
            raise ComposeWiringError(
                f"{file} is missing: run deploy/compose/make-secrets.sh before the containers start"
            )
        return file.read_text().strip()


def kafka_host_listener(node_config: Path = REDPANDA_NODE_CONFIG) -> tuple[int, int]:
    """Redpanda's ``host`` listener: (its port in the container, the port it advertises)."""
    redpanda = yaml.safe_load(node_config.read_text())["redpanda"]
    (bound,) = [listener for listener in redpanda["kafka_api"] if listener["name"] == "host"]
    (advertised,) = [
        listener for listener in redpanda["advertised_kafka_api"] if listener["name"] == "host"
    ]
    return int(bound["port"]), int(advertised["port"])


def stack_env(compose: ComposeFile, stack_dir: Path) -> dict[str, str]:
    """The ``stack.env`` of the compose stack, as the host's tests see it.

    Kafka as the superuser (tests create their own topics), S3 as MinIO's root user,
    the databases as compose's PostgreSQL user, the DCs as their Administrators: the
    same accounts the native stack gives the tests.
    """
    container_port, advertised = kafka_host_listener(
        compose.path.parent / "redpanda" / "redpanda.yaml"
    )
    kafka = compose.published("redpanda", container_port)
    if kafka.host_port != advertised:
        raise ComposeWiringError(
            f"redpanda publishes its host listener on {kafka.host_port} but advertises "
            f"{advertised}: clients would reconnect to the wrong port "
            "(deploy/compose/redpanda/redpanda.yaml)"
        )
    minio = compose.environment("minio")
    postgres = compose.environment("postgres")
    ca = stack_dir / "certs" / "ca.crt"
    env = {
        "INDUTECH_STACK_DIR": str(stack_dir),
        "INDUTECH_KAFKA__BOOTSTRAP_SERVERS": f"{HOST}:{kafka.host_port}",
        "INDUTECH_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "INDUTECH_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "INDUTECH_KAFKA__USERNAME": "admin",
        "INDUTECH_KAFKA__PASSWORD": compose.secret("redpanda_admin_password"),
        "INDUTECH_KAFKA__TLS__CA_FILE": str(ca),
        "INDUTECH_S3__ENDPOINT_URL": f"https://{HOST}:{compose.published('minio', 9000).host_port}",
        "INDUTECH_S3__REGION": minio["MINIO_SITE_REGION"],
        "INDUTECH_S3__ACCESS_KEY_ID": minio["MINIO_ROOT_USER"],
        "INDUTECH_S3__SECRET_ACCESS_KEY": compose.secret("minio_root_password"),
        "INDUTECH_S3__SSE": "aws:kms",
        "INDUTECH_S3__KMS_KEY_ID": compose.secret("minio_kms_key").split(":", 1)[0],
        "INDUTECH_S3__CA_FILE": str(ca),
        "INDUTECH_CLOUDWATCH__ENDPOINT_URL": (
            f"https://{HOST}:{compose.published('cloudwatch', 4566).host_port}"
        ),
        "INDUTECH_CLOUDWATCH__REGION": "eu-west-1",
        "INDUTECH_CLOUDWATCH__ACCESS_KEY_ID": "local",
        "INDUTECH_CLOUDWATCH__SECRET_ACCESS_KEY": "local-moto-accepts-anything",
        "INDUTECH_CLOUDWATCH__CA_FILE": str(ca),
    }
    pg_port = compose.published("postgres", 5432).host_port
    pg_password = compose.secret("pg_password")
    for block, database in (("WAREHOUSE", postgres["POSTGRES_DB"]), ("ERP", "erp")):
        env |= {
            f"INDUTECH_{block}__HOST": HOST,
            f"INDUTECH_{block}__PORT": str(pg_port),
            f"INDUTECH_{block}__DATABASE": database,
            f"INDUTECH_{block}__USER": postgres["POSTGRES_USER"],
            f"INDUTECH_{block}__PASSWORD": pg_password,
            f"INDUTECH_{block}__CA_FILE": str(ca),
            f"INDUTECH_{block}__DIALECT": "postgres",
        }
    env["INDUTECH_WAREHOUSE__SSLMODE"] = "verify-full"
    env["INDUTECH_ERP__ODBC_DRIVER"] = compose.environment("sql-backup")[
        "SQL_BACKUP_ERP__ODBC_DRIVER"
    ]
    for prefix, service in (("INDUTECH_AD_ONPREM", "samba-corp"), ("INDUTECH_AD_AWS", "samba-aws")):
        domain = compose.environment(service)["DOMAIN"]
        base_dn = f"DC={domain},DC=indutech,DC=test"
        env |= {
            f"{prefix}__URL": f"ldaps://{HOST}:{compose.published(service, 636).host_port}",
            f"{prefix}__BIND_DN": f"CN=Administrator,CN=Users,{base_dn}",
            f"{prefix}__PASSWORD": compose.secret(f"{domain}_admin_password"),
            f"{prefix}__BASE_DN": base_dn,
            f"{prefix}__CA_FILE": str(ca),
        }
    return env


def write_env_file(env: Mapping[str, str], path: Path) -> Path:
    """A dotenv file as the native stack writes it (single-quoted values, mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}='{value}'\n" for key, value in env.items()))
    path.chmod(0o600)
    return path


def docker_answers() -> bool:
    """True when a Docker engine answers (DOCKER_HOST or the default socket)."""
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415 - only this provider needs it

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure (no socket, refused, timeout) means: no engine to use
        return False


@dataclass
class ProjectCompose(DockerCompose):
    """DockerCompose under its own project name, so that stopping it (``down -v``) never
    touches the compose stack a developer runs by hand (project ``indutech-flows``)."""

    project: str = "indutech-tests"

    @cached_property
    def compose_command_property(self) -> list[str]:
        base: list[str] = super().compose_command_property
        return [*base, "--project-name", self.project]


class ContainersStack:
    """Start compose's backing services, run its set-up services, hand out StackSettings."""

    def __init__(self, compose: ComposeFile | None = None, *, project: str | None = None) -> None:
        self.compose_file = compose or ComposeFile()
        self.project = project or f"indutech-tests-{os.getpid()}"

    def docker_compose(self) -> ProjectCompose:
        """testcontainers' DockerCompose for the backing services (not started): ``up
        --build --wait`` of them (and of ``certs``, which they wait for)."""
        return ProjectCompose(
            context=str(self.compose_file.path.parent),
            compose_file_name=self.compose_file.path.name,
            services=self.compose_file.backing_services(),
            build=True,
            wait=True,
            keep_volumes=False,
            project=self.project,
        )

    def setup_commands(self, compose: ProjectCompose, stack_dir: Path) -> list[list[str]]:
        """After ``up``: the CA out of the certs volume (the host's tests verify TLS with
        it), then ``run --rm --no-deps`` of each other set-up service, in order."""
        base = compose.compose_command_property
        ca = stack_dir / "certs" / "ca.crt"
        commands = [[*base, "cp", "certs:/state/certs/ca.crt", str(ca)]]
        commands += [
            [*base, "run", "--rm", "--no-deps", name]
            for name in self.compose_file.setup_order()
            if name != "certs"  # `up` ran it already: the backing services wait for it
        ]
        return commands

    @contextmanager
    def running(self) -> Iterator[StackSettings]:
        """The stack up for the duration of the block; stopped with its volumes after."""
        compose = self.docker_compose()
        with tempfile.TemporaryDirectory(prefix="indutech-containers-") as tmp:
            stack_dir = Path(tmp)
            (stack_dir / "certs").mkdir()
            env_file = write_env_file(
                stack_env(self.compose_file, stack_dir), stack_dir / "stack.env"
            )
            with compose:
                for command in self.setup_commands(compose, stack_dir):
                    subprocess.run(
                        command,
                        check=True,
                        capture_output=True,
                        timeout=600,
                        cwd=self.compose_file.path.parent,
                    )
                yield StackSettings(_env_file=env_file)
