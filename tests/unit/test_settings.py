"""Settings: env prefixes, the shared fallback, nesting, secrets, and errors that name fields."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, ClassVar

import pytest
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsConfigDict

from indutech_common.cli import settings_help
from indutech_common.errors import ConfigError
from indutech_common.settings import (
    KafkaSettings,
    KeyPrefix,
    S3Settings,
    WorkerSettings,
    load_settings,
)


class DemoSettings(WorkerSettings):
    service_name: ClassVar[str] = "demo"
    model_config = SettingsConfigDict(env_prefix="DEMO_")

    kafka: KafkaSettings
    s3: S3Settings = S3Settings(sse="AES256")
    batch_size: int = 100


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("DEMO_", "INDUTECH_")):
            monkeypatch.delenv(name)
    return monkeypatch


class TestLoading:
    def test_service_prefix_and_nesting(self, clean_env: pytest.MonkeyPatch) -> None:
        """DEMO_KAFKA__USERNAME reaches settings.kafka.username."""
        clean_env.setenv("DEMO_KAFKA__USERNAME", "svc")
        clean_env.setenv("DEMO_KAFKA__PASSWORD", "pa55word-xyz")
        settings = load_settings(DemoSettings)
        assert settings.kafka.username == "svc"
        assert settings.kafka.password is not None
        assert settings.kafka.password.get_secret_value() == "pa55word-xyz"

    def test_shared_prefix_is_a_fallback(self, clean_env: pytest.MonkeyPatch) -> None:
        """INDUTECH_* configures every worker; the service prefix wins where both are set."""
        clean_env.setenv("INDUTECH_KAFKA__USERNAME", "shared")
        clean_env.setenv("INDUTECH_KAFKA__PASSWORD", "shared-secret")
        clean_env.setenv("INDUTECH_BATCH_SIZE", "7")
        clean_env.setenv("DEMO_BATCH_SIZE", "9")
        settings = load_settings(DemoSettings)
        assert settings.kafka.username == "shared"
        assert settings.batch_size == 9

    def test_secrets_directory(self, clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A secret mounted as a file (kafka__password) fills the nested SecretStr."""
        (tmp_path / "kafka__password").write_text("from-a-file")
        clean_env.setenv("INDUTECH_SECRETS_DIR", str(tmp_path))
        clean_env.setenv("DEMO_KAFKA__USERNAME", "svc")
        settings = load_settings(DemoSettings)
        assert settings.kafka.password is not None
        assert settings.kafka.password.get_secret_value() == "from-a-file"


class TestErrors:
    def test_bad_value_names_the_variable(self, clean_env: pytest.MonkeyPatch) -> None:
        """A wrong type fails at start with the env variable and what was expected."""
        clean_env.setenv("DEMO_KAFKA__USERNAME", "svc")
        clean_env.setenv("DEMO_KAFKA__PASSWORD", "x" * 12)
        clean_env.setenv("DEMO_BATCH_SIZE", "lots")
        with pytest.raises(ConfigError) as info:
            load_settings(DemoSettings)
        message = str(info.value)
        assert "DEMO_BATCH_SIZE" in message
        assert "valid integer" in message

    @pytest.mark.usefixtures("clean_env")
    def test_missing_required_block(self) -> None:
        """A missing required field is named, not a traceback."""
        with pytest.raises(ConfigError, match="DEMO_KAFKA"):
            load_settings(DemoSettings)

    def test_sasl_without_credentials(self, clean_env: pytest.MonkeyPatch) -> None:
        """SASL_SSL without a password says which fields it needs."""
        clean_env.setenv("DEMO_KAFKA__USERNAME", "svc")
        with pytest.raises(ConfigError, match="needs username and password"):
            load_settings(DemoSettings)

    def test_choice_lists_what_is_allowed(self, clean_env: pytest.MonkeyPatch) -> None:
        """An unknown security protocol lists the accepted ones."""
        clean_env.setenv("DEMO_KAFKA__SECURITY_PROTOCOL", "TLS")
        clean_env.setenv("DEMO_KAFKA__USERNAME", "svc")
        clean_env.setenv("DEMO_KAFKA__PASSWORD", "x" * 12)
        with pytest.raises(ConfigError) as info:
            load_settings(DemoSettings)
        assert "DEMO_KAFKA__SECURITY_PROTOCOL" in str(info.value)
        assert "'SASL_SSL'" in str(info.value)

    def test_error_never_contains_the_secret(self, clean_env: pytest.MonkeyPatch) -> None:
        """Validation errors do not echo input values, so a secret cannot leak through them."""
        clean_env.setenv("DEMO_KAFKA__USERNAME", "svc")
        clean_env.setenv("DEMO_KAFKA__PASSWORD", "hunter2-very-secret")
        clean_env.setenv("DEMO_KAFKA__REQUEST_TIMEOUT_MS", "-1")
        with pytest.raises(ConfigError) as info:
            load_settings(DemoSettings)
        assert "hunter2-very-secret" not in str(info.value)
        assert "DEMO_KAFKA__REQUEST_TIMEOUT_MS" in str(info.value)

    def test_kms_needs_a_key(self) -> None:
        """sse aws:kms without kms_key_id is refused."""
        with pytest.raises(ValueError, match="kms_key_id"):
            S3Settings(sse="aws:kms")


class TestHelp:
    def test_help_lists_every_leaf_with_its_variable(self) -> None:
        """--help shows nested variables, required ones and masks secret defaults."""
        text = settings_help(DemoSettings)
        assert "DEMO_KAFKA__BOOTSTRAP_SERVERS (default 'localhost:9093')" in text
        assert "DEMO_KAFKA__PASSWORD (secret)" in text
        assert "DEMO_S3__SSE" in text
        assert "DEMO_SHUTDOWN_TIMEOUT_S" in text


def _prefix_settings() -> list[tuple[str, FieldInfo]]:
    """Every ``*_prefix`` setting of every worker (a new one is covered without editing this)."""
    from indutech_identity_sync.config import IdentitySyncSettings  # noqa: PLC0415
    from indutech_iot_aggregator.config import IotAggregatorSettings  # noqa: PLC0415
    from indutech_iot_ingest.config import IotIngestSettings  # noqa: PLC0415
    from indutech_iot_to_s3.config import IotToS3Settings  # noqa: PLC0415
    from indutech_metrics_shipper.config import MetricsShipperSettings  # noqa: PLC0415
    from indutech_sql_backup.config import SqlBackupSettings  # noqa: PLC0415

    workers: list[type[WorkerSettings]] = [
        IdentitySyncSettings,
        IotAggregatorSettings,
        IotIngestSettings,
        IotToS3Settings,
        MetricsShipperSettings,
        SqlBackupSettings,
    ]
    return [
        (f"{worker.service_name}.{name}", info)
        for worker in workers
        for name, info in worker.model_fields.items()
        if name.endswith("_prefix")
    ]


class TestKeyPrefix:
    @pytest.mark.parametrize("value", ["", "tests/x/", "a/b/c/"])
    def test_accepts_empty_or_a_folder(self, value: str) -> None:
        """Empty, or ending with '/' and not starting with it."""
        assert TypeAdapter(KeyPrefix).validate_python(value) == value

    @pytest.mark.parametrize(
        ("value", "why"), [("tests/x", "must end with '/'"), ("/tests/x/", "no leading '/'")]
    )
    def test_refuses_what_is_not_a_folder(self, value: str, why: str) -> None:
        """The message says what to fix."""
        with pytest.raises(ValidationError, match=why):
            TypeAdapter(KeyPrefix).validate_python(value)

    def test_every_worker_prefix_setting_is_a_key_prefix(self) -> None:
        """No worker's prefix setting takes 'tests/x' (it would write keys 'tests/xiot/...')."""
        fields = _prefix_settings()
        assert {name for name, _ in fields} >= {
            "iot-aggregator.lake_prefix",
            "iot-aggregator.staging_prefix",
            "iot-ingest.dead_letter_prefix",
            "iot-to-s3.lake_prefix",
            "sql-backup.backup_prefix",
        }
        accepted: list[tuple[str, str]] = []
        for name, info in fields:
            adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, *info.metadata])
            for bad in ("tests/x", "/tests/x/"):
                try:
                    adapter.validate_python(bad)
                except ValidationError:
                    continue
                accepted.append((name, bad))
        assert accepted == []
