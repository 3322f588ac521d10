"""Where the tests find the real services.

Two providers: the native local stack (``make stack-up`` writes
``.stack/stack.env``), used here and in CI; or testcontainers, used when
``INDUTECH_TEST_STACK=containers`` and a Docker engine answers (no engine runs
on our machines, so that path is written but not exercised here).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import ClassVar, Literal

from pydantic_settings import SettingsConfigDict

from indutech_common.settings import (
    CloudWatchSettings,
    KafkaSettings,
    LdapSettings,
    OdbcSourceSettings,
    S3Settings,
    WarehouseSettings,
    WorkerSettings,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def stack_service(action: Literal["up", "down"], service: str, *, timeout_s: float = 180.0) -> None:
    """``deploy/local/stack <action> <service>``: the outage and restart tests stop and start
    one real service of the shared stack (run them only under the stack lock)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        # a test that stops a shared service beside others breaks them at random (CI lost
        # Kafka for six tests when a helper function took a test's `serial` mark)
        raise RuntimeError(
            f"refusing to take {service} {action} in the parallel pytest worker {worker}: "
            "mark the test @pytest.mark.serial so `make test` runs it alone"
        )
    subprocess.run(
        [str(REPO_ROOT / "deploy/local/stack"), action, service],
        check=True,
        capture_output=True,
        timeout=timeout_s,
    )


class StackSettings(WorkerSettings):
    """Every endpoint of the local stack, read from its ``stack.env``."""

    service_name: ClassVar[str] = "tests"
    model_config = SettingsConfigDict(env_prefix="INDUTECH_")

    stack_dir: Path
    kafka: KafkaSettings
    kafka_plaintext_bootstrap: str = "127.0.0.1:9092"
    s3: S3Settings
    warehouse: WarehouseSettings
    erp: OdbcSourceSettings
    ad_onprem: LdapSettings
    ad_aws: LdapSettings
    cloudwatch: CloudWatchSettings

    @property
    def ca_file(self) -> Path:
        return self.stack_dir / "certs" / "ca.crt"


def stack_env_file() -> Path:
    stack_dir = Path(os.environ.get("STACK_DIR", REPO_ROOT / ".stack"))
    return stack_dir / "stack.env"


class StackNotRunningError(RuntimeError):
    pass


def load_stack() -> StackSettings:
    env_file = stack_env_file()
    if not env_file.exists():
        raise StackNotRunningError(
            f"{env_file} is missing: start the local stack with 'make stack-up' "
            "(or set INDUTECH_TEST_STACK=containers where a Docker engine runs)."
        )
    return StackSettings(_env_file=env_file)
