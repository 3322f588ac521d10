"""The librdkafka transactional producer (iot-ingest's) over SASL_SSL with SCRAM-SHA-512:
the stack's CA, transactions, fencing and clear start failures."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from confluent_kafka import KafkaException
from pydantic import SecretStr

from indutech_common.kafka import (
    KafkaAuthenticationError,
    KafkaTlsError,
    connection_kwargs,
    create_consumer,
    start_client,
)
from indutech_common.kafka.librdkafka import TransactionalProducer
from tests.support.stack import StackSettings


@pytest.fixture
async def topic(stack: StackSettings, unique: str) -> AsyncIterator[str]:
    """A fresh two-partition topic, deleted afterwards."""
    name = f"test.rdk.{unique}"
    admin = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
        yield name
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def read_committed(
    stack: StackSettings, topic: str, expected: int, *, quiet_s: float = 2.0
) -> list[tuple[int, bytes | None, bytes | None, dict[str, bytes]]]:
    """(partition, key, value, headers) of what a read_committed consumer sees: ``expected``
    records, then ``quiet_s`` more to catch any extra."""
    consumer = create_consumer(stack.kafka, topic, group_id=None)
    await start_client(consumer, stack.kafka)
    found: list[tuple[int, bytes | None, bytes | None, dict[str, bytes]]] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=250)
            found += [
                (m.partition, m.key, m.value, dict(m.headers))
                for records in batches.values()
                for m in records
            ]
            if len(found) >= expected:
                deadline = min(deadline, time.monotonic() + quiet_s)
    finally:
        await consumer.stop()
    return found


class TestTransactions:
    async def test_committed_records_are_seen_and_aborted_ones_never(
        self, stack: StackSettings, topic: str, unique: str
    ) -> None:
        """Over SASL_SSL with the stack's CA: a committed transaction is visible to a
        read_committed reader with its headers; an aborted one is not."""
        producer = TransactionalProducer(stack.kafka, transactional_id=f"test-rdk-{unique}")
        try:
            await producer.init_transactions(30)
            await producer.begin_transaction()
            producer.produce(topic, b"committed-1", b"k1")
            producer.produce(topic, b"committed-2", b"k2", [("reason", b"why")])
            await producer.commit_transaction(30)
            await producer.begin_transaction()
            producer.produce(topic, b"aborted", b"k1")
            await producer.abort_transaction(30)
            await producer.begin_transaction()
            producer.produce(topic, b"committed-3", b"k1")
            await producer.commit_transaction(30)
            await producer.ping()
        finally:
            await producer.close()
        found = await read_committed(stack, topic, 3)
        assert sorted(value or b"" for _, _, value, _ in found) == [
            b"committed-1",
            b"committed-2",
            b"committed-3",
        ]
        (headers,) = [h for _, _, value, h in found if value == b"committed-2"]
        assert headers == {"reason": b"why"}

    async def test_keys_go_to_the_partition_the_java_client_and_aiokafka_choose(
        self, stack: StackSettings, topic: str, unique: str
    ) -> None:
        """murmur2 of the key, as before the switch of client: a key keeps its partition."""
        from aiokafka.partitioner import murmur2  # noqa: PLC0415 - the reference only here

        keys = [f"sensor-{i:04d}".encode() for i in range(40)]
        producer = TransactionalProducer(stack.kafka, transactional_id=f"test-rdk-{unique}")
        try:
            await producer.init_transactions(30)
            await producer.begin_transaction()
            for key in keys:
                producer.produce(topic, key, key)
            await producer.commit_transaction(30)
        finally:
            await producer.close()
        found = await read_committed(stack, topic, len(keys), quiet_s=0.5)
        assert sorted((key or b"", part) for part, key, _, _ in found) == sorted(
            (key, (murmur2(key) & 0x7FFFFFFF) % 2) for key in keys
        )

    async def test_a_second_producer_with_the_same_id_fences_the_first(
        self, stack: StackSettings, topic: str, unique: str
    ) -> None:
        """init_transactions of a new incarnation aborts the old one's open transaction, and
        the old one can no longer commit."""
        old = TransactionalProducer(stack.kafka, transactional_id=f"test-rdk-{unique}")
        new = TransactionalProducer(stack.kafka, transactional_id=f"test-rdk-{unique}")
        try:
            await old.init_transactions(30)
            await old.begin_transaction()
            old.produce(topic, b"zombie", b"k")
            old.client.flush(10)  # on the broker, inside the open transaction
            await new.init_transactions(30)
            with pytest.raises(KafkaException) as info:
                await old.commit_transaction(30)
            assert info.value.args[0].fatal()
            await new.begin_transaction()
            new.produce(topic, b"new", b"k")
            await new.commit_transaction(30)
        finally:
            await old.close()
            await new.close()
        found = await read_committed(stack, topic, 1)
        assert [value for _, _, value, _ in found] == [b"new"]


class TestFailures:
    async def test_wrong_scram_password_is_an_authentication_error(
        self, stack: StackSettings, unique: str
    ) -> None:
        """Named as such, with the user, never the password."""
        settings = stack.kafka.model_copy(update={"password": SecretStr("wrong-password-123")})
        producer = TransactionalProducer(settings, transactional_id=f"test-rdk-{unique}")
        try:
            with pytest.raises(KafkaAuthenticationError, match="SCRAM-SHA-512") as info:
                await producer.init_transactions(10)
        finally:
            await producer.close()
        assert "wrong-password-123" not in str(info.value)
        assert "'indutech'" in str(info.value)

    async def test_a_broker_our_ca_did_not_sign_is_a_tls_error(
        self, stack: StackSettings, unique: str
    ) -> None:
        """With the system store instead of the stack's CA, the handshake fails: verification
        cannot be switched off."""
        settings = stack.kafka.model_copy(
            update={"tls": stack.kafka.tls.model_copy(update={"ca_file": None})}
        )
        producer = TransactionalProducer(settings, transactional_id=f"test-rdk-{unique}")
        try:
            with pytest.raises(KafkaTlsError, match="KAFKA__TLS__CA_FILE"):
                await producer.init_transactions(10)
        finally:
            await producer.close()
