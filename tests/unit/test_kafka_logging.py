"""aiokafka's own warnings and errors reach our JSON log, scrubbed, and do not flood it."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from indutech_common.kafka import KafkaUnavailableError, create_producer, start_client
from indutech_common.logging import RepeatFilter, configure_logging, register_secrets_of
from indutech_common.settings import KafkaSettings

PASSWORD = "sasl-pass-never-logged-9876"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Logging configured as a worker does, into a buffer; the previous setup restored after."""
    root = logging.getLogger()
    aiokafka = logging.getLogger("aiokafka")
    saved = (root.handlers[:], root.level, aiokafka.level, structlog.get_config())
    out = io.StringIO()
    configure_logging(level="INFO", fmt="json", service="t", stream=out)
    try:
        yield out
    finally:
        root.handlers[:], level, aiokafka_level, config = saved
        root.setLevel(level)
        aiokafka.setLevel(aiokafka_level)
        structlog.configure(**config)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class TestAiokafkaLogs:
    async def test_a_refused_connection_is_logged_as_json_without_the_password(
        self, log_stream: io.StringIO
    ) -> None:
        """A producer pointed at a closed port: aiokafka's error is a JSON line, scrubbed."""
        settings = KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{closed_port()}",
            security_protocol="SASL_PLAINTEXT",
            username="svc",
            password=SecretStr(PASSWORD),
            request_timeout_ms=2000,
        )
        register_secrets_of(settings)
        producer = create_producer(settings)
        with pytest.raises(KafkaUnavailableError):
            await start_client(producer, settings, timeout_s=5)
        text = log_stream.getvalue()
        assert PASSWORD not in text
        library = [line for line in json_lines(text) if line["logger"].startswith("aiokafka")]
        assert library, f"no aiokafka line in: {text[:2000]}"
        refused = [line for line in library if "Unable connect to" in line["event"]]
        assert refused, library
        assert refused[0]["level"] == "error"
        assert refused[0]["service"] == "t"

    def test_aiokafka_info_stays_out(self, log_stream: io.StringIO) -> None:
        """Below WARNING aiokafka is chatter (joins, assignments): not logged at INFO."""
        logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group")
        logging.getLogger("aiokafka.conn").warning("a warning")
        events = [line["event"] for line in json_lines(log_stream.getvalue())]
        assert events == ["a warning"]


class TestRepeatFilter:
    def test_the_same_message_passes_once_per_window_then_says_how_many_were_held(self) -> None:
        """Retries log the same template: the first passes, the rest are counted until later."""
        clock = [0.0]
        repeat = RepeatFilter("aiokafka", window_s=60, clock=lambda: clock[0])

        def record(name: str, msg: str, *args: object) -> logging.LogRecord:
            return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

        template = "Unable connect to node with id %s: %s"
        assert repeat.filter(record("aiokafka.client", template, 1, "refused"))
        assert not repeat.filter(record("aiokafka.client", template, 1, "refused"))
        assert not repeat.filter(record("aiokafka.client", template, 2, "refused"))
        assert repeat.filter(record("aiokafka.client", "another message"))
        assert repeat.filter(record("botocore", template, 1, "refused")), "only aiokafka"
        clock[0] = 61.0
        later = record("aiokafka.client", template, 1, "refused")
        assert repeat.filter(later)
        assert vars(later)["repeated"] == 2
