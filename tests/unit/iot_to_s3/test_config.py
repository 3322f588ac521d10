"""Settings and command line of iot-to-s3: bad values fail at start naming the variable."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from indutech_iot_to_s3.cli import main
from indutech_iot_to_s3.segments import PlannedObject
from indutech_iot_to_s3.sinks import Intent, is_transient
from tests.support.cli import help_text, refused_at_start, set_environment

SAMPLES = Path(__file__).parents[1] / "samples"

VALID = {
    "INDUTECH_KAFKA__USERNAME": "u",
    "INDUTECH_KAFKA__PASSWORD": "secret-password-1",
    "INDUTECH_S3__KMS_KEY_ID": "k",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return set_environment(monkeypatch, VALID)


class TestBadConfig:
    @pytest.mark.parametrize(
        ("variable", "value", "expected"),
        [
            ("IOT_TO_S3_ROTATION__MAX_RECORDS", "0", "greater than 0"),
            ("IOT_TO_S3_LAKE_PREFIX", "tests/x", "must end with '/'"),
            ("IOT_TO_S3_MULTIPART_PART_BYTES", "1024", "greater than or equal to 5242880"),
        ],
    )
    def test_exits_2_naming_the_variable(
        self,
        env: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        variable: str,
        value: str,
        expected: str,
    ) -> None:
        """A bad value stops the worker before any work, naming the variable and the rule."""
        env.setenv(variable, value)
        err = refused_at_start(main, capsys)
        assert variable in err
        assert expected in err
        assert VALID["INDUTECH_KAFKA__PASSWORD"] not in err

    def test_missing_kafka_block_is_named(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without Kafka settings the error says which variable to set."""
        for name in VALID:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv("INDUTECH_KAFKA__BOOTSTRAP_SERVERS", raising=False)
        assert main([]) == 2
        assert "IOT_TO_S3_KAFKA" in capsys.readouterr().err


class TestHelp:
    def test_help_lists_the_settings(self) -> None:
        """--help documents rotation, the memory cap and the lake prefix with their variables."""
        out = help_text("indutech_iot_to_s3")
        for variable in (
            "IOT_TO_S3_ROTATION__MAX_RECORDS (default 500000)",
            "IOT_TO_S3_MEMORY_CAP_BYTES",
            "IOT_TO_S3_LAKE_PREFIX",
            "IOT_TO_S3_GROUP_ID (default 'iot-to-s3')",
        ):
            assert variable in out


class TestIntentAndErrors:
    def test_intent_round_trips_through_json(self) -> None:
        """What a crashed run recorded is read back identically by the next one."""
        hour = datetime(2026, 3, 1, 10, tzinfo=UTC)
        intent = Intent("t", 1, 5, 9, (PlannedObject("k", hour, 5, 8, 3),))
        assert Intent.from_json(intent.to_json()) == intent

    def test_recorded_v1_intent_still_parses(self) -> None:
        """An intent written before the refactor (samples/iot_to_s3_intent_v1.json) reads back
        whole, and is written again byte for byte (a replay compares plans by value)."""
        raw = (SAMPLES / "iot_to_s3_intent_v1.json").read_bytes().strip()
        intent = Intent.from_json(raw)
        assert (intent.topic, intent.partition, intent.start, intent.end) == (
            "iot.sensor-readings.v1",
            3,
            1000,
            1999,
        )
        assert [(o.hour.hour, o.first_offset, o.records) for o in intent.objects] == [
            (10, 1000, 480),
            (11, 1012, 510),
        ]
        assert intent.to_json() == raw

    def test_transient_s3_errors(self) -> None:
        """No answer, 5xx and throttling are retried; a 403 is not."""
        assert is_transient(EndpointConnectionError(endpoint_url="https://s3"))
        assert is_transient(_client_error("SlowDown", 503))
        assert not is_transient(_client_error("AccessDenied", 403))


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutObject")
