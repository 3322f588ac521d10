"""Kafka over SASL_SSL with SCRAM-SHA-512: round trips, transactions, and clear failures."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from indutech_common.kafka import (
    DeadLetterWriter,
    KafkaAuthenticationError,
    KafkaUnavailableError,
    connection_kwargs,
    create_consumer,
    create_producer,
    ping_producer,
    start_client,
)
from indutech_common.metrics import WorkerMetrics
from indutech_common.settings import KafkaSettings
from tests.support.stack import StackSettings


@pytest.fixture
async def topic(stack: StackSettings, unique: str) -> AsyncIterator[str]:
    """A fresh two-partition topic, deleted afterwards."""
    name = f"test.{unique}"
    admin = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def consume_all(stack: StackSettings, topic: str, expected: int) -> list[bytes]:
    consumer = create_consumer(stack.kafka, topic, group_id=None)
    await start_client(consumer, stack.kafka)
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 20
        while len(values) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            values += [m.value for records in batches.values() for m in records if m.value]
    finally:
        await consumer.stop()
    return values


async def tls_version(host: str, port: int, context: ssl.SSLContext) -> str | None:
    """The TLS version a handshake with ``context`` negotiates with the server at host:port."""
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout=10
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return None if ssl_object is None else ssl_object.version()
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), timeout=2)


class TestRoundTrip:
    async def test_produce_consume_over_sasl_ssl_tls13(
        self, stack: StackSettings, topic: str
    ) -> None:
        """Records go through the SASL_SSL listener with a TLS context that allows nothing
        below TLS 1.3 and verifies the broker; the broker itself refuses TLS 1.2."""
        context = connection_kwargs(stack.kafka)["ssl_context"]
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        host, _, port = stack.kafka.bootstrap_servers.split(",")[0].rpartition(":")
        assert await tls_version(host, int(port), context) == "TLSv1.3"
        tls12 = ssl.create_default_context(cafile=str(stack.kafka.tls.ca_file))
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
            await tls_version(host, int(port), tls12)
        # aiokafka gets that very context: whatever it connects over is TLS 1.3.
        producer = create_producer(stack.kafka, ssl_context=context)
        await start_client(producer, stack.kafka)
        try:
            for i in range(10):
                await producer.send_and_wait(topic, f"r{i}".encode(), key=b"k")
            await ping_producer(producer)
        finally:
            await producer.stop()
        assert sorted(await consume_all(stack, topic, 10)) == sorted(
            f"r{i}".encode() for i in range(10)
        )

    async def test_read_committed_sees_only_committed_transactions(
        self, stack: StackSettings, topic: str, unique: str
    ) -> None:
        """An aborted transaction is invisible to a read_committed consumer; a committed one is."""
        producer = create_producer(stack.kafka, transactional_id=f"test-{unique}")
        await start_client(producer, stack.kafka)
        try:
            async with producer.transaction():
                await producer.send(topic, b"committed-1")
                await producer.send(topic, b"committed-2")
            await producer.begin_transaction()
            await producer.send(topic, b"aborted")
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send(topic, b"committed-3")
        finally:
            await producer.stop()
        values = await consume_all(stack, topic, 3)
        assert sorted(values) == [b"committed-1", b"committed-2", b"committed-3"]

    async def test_dead_letter_carries_reason_headers(
        self, stack: StackSettings, topic: str
    ) -> None:
        """The dead-letter writer keeps the original bytes and says why."""
        producer = create_producer(stack.kafka)
        await start_client(producer, stack.kafka)
        metrics = WorkerMetrics("dlq-test")
        try:
            writer = DeadLetterWriter(producer, metrics=metrics, topic=topic)
            await writer.send(
                b"\x00garbage",
                reason="invalid_json",
                error="Expecting value: line 1",
                source="/san/a.jsonl",
                offset=42,
            )
            await producer.flush()
        finally:
            await producer.stop()
        consumer = create_consumer(stack.kafka, topic, group_id=None)
        await start_client(consumer, stack.kafka)
        try:
            batches = await consumer.getmany(timeout_ms=5000)
        finally:
            await consumer.stop()
        (record,) = [m for records in batches.values() for m in records]
        headers = dict(record.headers)
        assert record.value == b"\x00garbage"
        assert headers["reason"] == b"invalid_json"
        assert headers["source"] == b"/san/a.jsonl"
        assert headers["offset"] == b"42"
        assert headers["error"].startswith(b"Expecting value")
        counted = metrics.registry.get_sample_value(
            "indutech_dead_lettered_records_total", {"worker": "dlq-test", "reason": "invalid_json"}
        )
        assert counted == 1


class TestFailures:
    async def test_wrong_scram_password_fails_fast(self, stack: StackSettings) -> None:
        """A wrong password is an authentication error naming the user, within seconds."""
        settings = stack.kafka.model_copy(update={"password": SecretStr("wrong-password-123")})
        producer = create_producer(settings)
        started = time.monotonic()
        with pytest.raises(KafkaAuthenticationError, match="refused the SCRAM-SHA-512") as info:
            await start_client(producer, settings, timeout_s=15)
        assert time.monotonic() - started < 10
        assert "wrong-password-123" not in str(info.value)
        assert "'indutech'" in str(info.value)

    async def test_plaintext_on_the_tls_listener_fails_fast(self, stack: StackSettings) -> None:
        """A PLAINTEXT client on 9093 fails with an error that points at the protocol."""
        settings = KafkaSettings(
            bootstrap_servers=stack.kafka.bootstrap_servers,
            security_protocol="PLAINTEXT",
            request_timeout_ms=5000,
        )
        producer = create_producer(settings)
        started = time.monotonic()
        with pytest.raises(KafkaUnavailableError, match="SECURITY_PROTOCOL"):
            await start_client(producer, settings, timeout_s=10)
        assert time.monotonic() - started < 12

    async def test_unknown_ca_is_a_tls_error(self, stack: StackSettings) -> None:
        """Without our CA the handshake fails; verification cannot be switched off."""
        settings = stack.kafka.model_copy(
            update={"tls": stack.kafka.tls.model_copy(update={"ca_file": None})}
        )
        producer = create_producer(settings)
        with pytest.raises((ssl.SSLError, Exception), match=r"(?i)certificate|TLS"):
            await start_client(producer, settings, timeout_s=10)

    async def test_nobody_listening(self) -> None:
        settings = KafkaSettings(
            bootstrap_servers="127.0.0.1:1",
            username="u",
            password=SecretStr("p" * 8),
            request_timeout_ms=2000,
        )
        producer = create_producer(settings)
        with pytest.raises(KafkaUnavailableError, match="could not connect"):
            await start_client(producer, settings, timeout_s=10)
        await asyncio.sleep(0)
