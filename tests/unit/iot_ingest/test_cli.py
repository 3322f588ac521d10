"""The iot-ingest command line: --help, bad settings named at start, no demo subcommand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indutech_common.settings import load_settings
from indutech_iot_ingest.cli import main
from indutech_iot_ingest.config import IotIngestSettings

KAFKA_ENV = {
    "IOT_INGEST_KAFKA__USERNAME": "indutech",
    "IOT_INGEST_KAFKA__PASSWORD": "a-secret-password",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("IOT_INGEST_", "INDUTECH_")):
            monkeypatch.delenv(name)


class TestCli:
    def test_help_lists_the_settings(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--help exits 0 and names each setting's variable."""
        with pytest.raises(SystemExit) as info:
            main(["--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "IOT_INGEST_SAN_DIR" in out
        assert "IOT_INGEST_TRANSACTIONAL_ID" in out

    def test_bad_settings_fail_at_start_naming_the_field(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """A missing SAN directory and a bad number are both named; the secret is not printed."""
        for name, value in KAFKA_ENV.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("IOT_INGEST_SAN_DIR", str(tmp_path / "absent"))
        monkeypatch.setenv("IOT_INGEST_MAX_LINE_BYTES", "12")
        assert main(["run"]) == 2
        err = capsys.readouterr().err
        assert "IOT_INGEST_SAN_DIR" in err
        assert "not a directory" in err
        assert "IOT_INGEST_MAX_LINE_BYTES" in err
        assert "a-secret-password" not in err

    def test_missing_kafka_block_is_named(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """Without Kafka credentials the error names the kafka settings."""
        monkeypatch.setenv("IOT_INGEST_SAN_DIR", str(tmp_path))
        assert main([]) == 2
        assert "IOT_INGEST_KAFKA" in capsys.readouterr().err

    def test_no_generate_subcommand(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The production CLI offers no demo data generator (it is indutech_devtools.iot)."""
        with pytest.raises(SystemExit) as info:
            main(["generate", "--dir", str(tmp_path), "--count", "1"])
        assert info.value.code == 2
        assert "invalid choice: 'generate'" in capsys.readouterr().err


class TestDeadLetterStoreSettings:
    def test_the_shared_s3_block_turns_the_store_on(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """INDUTECH_S3__* (the cluster-wide ConfigMap) configures the store; unset, it is off."""
        for name, value in KAFKA_ENV.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("IOT_INGEST_SAN_DIR", str(tmp_path))
        assert load_settings(IotIngestSettings).s3 is None
        monkeypatch.setenv("INDUTECH_S3__SSE", "AES256")
        monkeypatch.setenv("INDUTECH_S3__LAKE_BUCKET", "plant-lake")
        settings = load_settings(IotIngestSettings)
        assert settings.s3 is not None
        assert settings.s3.lake_bucket == "plant-lake"
        assert settings.dead_letter_prefix == "dead-letter/iot-ingest/"
        assert settings.last_line_settle_s == 120.0
