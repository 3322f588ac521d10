"""Logs are structured and never carry a secret."""

from __future__ import annotations

import io
import json
import logging

import structlog
from pydantic import SecretStr
from structlog.testing import capture_logs

from indutech_common.logging import (
    REDACTED,
    configure_logging,
    redact_secret_keys,
    register_secret,
    register_secrets_of,
)
from indutech_common.settings import KafkaSettings


class TestRedaction:
    def test_secretstr_and_secret_keys_are_masked(self) -> None:
        """A SecretStr value and any key that names a secret are replaced before rendering."""
        event = redact_secret_keys(
            None, "info", {"event": "x", "token": "abc", "pw": SecretStr("s3cr3t-value")}
        )
        assert event["token"] == REDACTED
        assert event["pw"] == REDACTED

    def test_settings_secret_never_reaches_a_rendered_line(self) -> None:
        """Every SecretStr of loaded settings is scrubbed, even inside an exception message."""
        settings = KafkaSettings(username="svc", password=SecretStr("kafka-pass-123456"))
        register_secrets_of(settings)
        out = io.StringIO()
        configure_logging(fmt="json", service="t", stream=out)
        log = structlog.get_logger()
        log.info("connecting", settings=settings, detail="pw=kafka-pass-123456")
        error = RuntimeError("auth failed for kafka-pass-123456")
        log.error("failed", exc_info=error)
        logging.getLogger("aiokafka.conn").critical("lib says kafka-pass-123456")
        text = out.getvalue()
        assert "kafka-pass-123456" not in text
        assert text.count(REDACTED) >= 3
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert {line["event"] for line in lines} >= {"connecting", "failed"}
        assert all(line["service"] == "t" for line in lines if "service" in line)

    def test_structured_keys_captured(self) -> None:
        """Log calls carry structured keys that tests can assert (capture_logs)."""
        register_secret("another-secret-value")
        with capture_logs() as logs:
            structlog.get_logger().warning("retrying", what="kafka", attempt=2)
        assert logs == [
            {"event": "retrying", "what": "kafka", "attempt": 2, "log_level": "warning"}
        ]
