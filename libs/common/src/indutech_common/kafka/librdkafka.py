"""librdkafka (confluent-kafka) clients, configured from the same ``KafkaSettings``.

Used for one role only: the high-volume transactional producer of iot-ingest, where a
Python client's per-record cost is most of the worker's time (docs/architecture.md,
"Kafka client libraries"). Every other client stays on aiokafka.

librdkafka does its I/O, batching, retries and TLS in its own threads; the calls that
wait on the network (``init_transactions``, ``commit_transaction``, ...) block, so the
async wrapper below runs them in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from indutech_common.kafka.exceptions import (
    KafkaAuthenticationError,
    KafkaClientError,
    KafkaTlsError,
    KafkaUnavailableError,
)
from indutech_common.logging import scrub
from indutech_common.settings import KafkaSettings

_log = structlog.get_logger(__name__)
# librdkafka's own log lines (broker down, retries) go through logging, then structlog
_LIBRDKAFKA_LOGGER = logging.getLogger("librdkafka")
INIT_STEP_S = 1.0
# errors that no retry mends: the start stops at the first
_START_FAILURES = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})


def librdkafka_config(settings: KafkaSettings) -> dict[str, Any]:
    """Connection, TLS and SASL properties for a librdkafka client (holds the password:
    never log it)."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "socket.timeout.ms": settings.request_timeout_ms,
        "logger": _LIBRDKAFKA_LOGGER,
    }
    if settings.client_id:
        config["client.id"] = settings.client_id
    if settings.security_protocol in ("SASL_SSL", "SSL"):
        tls = settings.tls
        # Hostname checks always on (librdkafka's default since 2.0, set here so no
        # override can drop it); the CA file, else the system store.
        config["ssl.endpoint.identification.algorithm"] = "https"
        config["enable.ssl.certificate.verification"] = True
        config["ssl.ca.location"] = str(tls.ca_file) if tls.ca_file else "probe"
        if tls.cert_file and tls.key_file:
            config["ssl.certificate.location"] = str(tls.cert_file)
            config["ssl.key.location"] = str(tls.key_file)
            if tls.key_password:
                config["ssl.key.password"] = tls.key_password.get_secret_value()
    if settings.security_protocol.startswith("SASL"):
        config["sasl.mechanisms"] = settings.sasl_mechanism
        config["sasl.username"] = settings.username
        config["sasl.password"] = settings.password.get_secret_value() if settings.password else ""
    return config


class TransactionalProducer:
    """A librdkafka transactional producer (acks=all, idempotent) with async waits.

    ``produce`` is a plain call (no await, no future per record): librdkafka queues the
    record and batches it. Delivery is awaited once per transaction, by
    ``commit_transaction``, which fails when any record of the transaction failed.
    Records are partitioned like the Java client and aiokafka (murmur2 of the key), so a
    key keeps its partition across the switch of client.
    """

    def __init__(self, settings: KafkaSettings, *, transactional_id: str, **overrides: Any) -> None:
        self.settings = settings
        self.transactional_id = transactional_id
        config = librdkafka_config(settings)
        config |= {
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "compression.type": "none",
            # only failed deliveries make a report: commit_transaction reports them all
            "delivery.report.only.error": True,
            "error_cb": self._on_error,
        }
        config |= overrides
        self.last_error: KafkaError | None = None
        self.client = Producer(config)

    def _on_error(self, error: KafkaError) -> None:
        # Called from librdkafka's calls: it retries by itself, and a fatal error is raised
        # by the next transactional call, so here it is logged, and kept for the start.
        self.last_error = error
        _log.warning(
            "librdkafka_error",
            code=error.name(),
            error=scrub(error.str()),
            fatal=error.fatal(),
            retriable=error.retriable(),
        )

    async def init_transactions(self, timeout_s: float) -> None:
        """Fence older producers with this id (their open transaction is aborted).

        Waits in steps of a second, so that refused credentials or a failed TLS handshake
        (which librdkafka only reports to the error callback, and retries) end the start
        at once with an error that says what to fix.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            step = max(0.1, min(INIT_STEP_S, deadline - time.monotonic()))
            try:
                await asyncio.to_thread(self.client.init_transactions, step)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                self.client.poll(0)  # serves the error callback (it runs only in poll/flush)
                seen = self.last_error
                if seen is not None and seen.code() in _START_FAILURES:
                    raise translate_librdkafka_error(KafkaException(seen), self.settings) from None
                retriable = isinstance(error, KafkaError) and error.retriable()
                if not retriable or time.monotonic() >= deadline:
                    raise translate_librdkafka_error(exc, self.settings) from None
            else:
                return

    async def begin_transaction(self) -> None:
        self.client.begin_transaction()  # local: no network round trip

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """Queue one record (raises BufferError when librdkafka's queue is full)."""
        if headers is None:
            self.client.produce(topic, value, key)
        else:
            listed: list[tuple[str, str | bytes | None]] = list(headers)
            self.client.produce(topic, value, key, headers=listed)

    async def wait_for_room(self, timeout_s: float = 1.0) -> None:
        """Wait (off the loop) for deliveries to free some of the queue."""
        await asyncio.to_thread(self.client.poll, timeout_s)

    async def commit_transaction(self, timeout_s: float) -> None:
        await asyncio.to_thread(self.client.commit_transaction, timeout_s)

    async def abort_transaction(self, timeout_s: float) -> None:
        await asyncio.to_thread(self.client.abort_transaction, timeout_s)

    async def partitions_for(self, topic: str, timeout_s: float = 10.0) -> list[int]:
        metadata = await asyncio.to_thread(self.client.list_topics, topic, timeout_s)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            raise KafkaUnavailableError(
                f"no metadata for topic {topic!r}: {found.error if found else 'not listed'}. "
                "Check that the topic exists and the broker answers."
            )
        return sorted(found.partitions)

    async def ping(self, timeout_s: float = 5.0) -> None:
        """Readiness: a broker answers a metadata request."""
        try:
            await asyncio.to_thread(self.client.list_topics, None, timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"Kafka metadata request failed: {scrub(str(exc))}. Is the broker up?"
            ) from None

    async def close(self, timeout_s: float = 2.0) -> None:
        """Drop what is still queued (an open transaction is aborted by the broker or by
        the next incarnation's ``init_transactions``) and stop librdkafka's threads, waiting
        at most ``timeout_s``: a broker that is away must not hold up a drain."""
        client = self.client
        client.purge(in_queue=True, in_flight=True, blocking=False)
        try:
            await asyncio.wait_for(asyncio.to_thread(client.flush, 0), timeout=timeout_s)
        except TimeoutError:
            _log.warning("kafka_client_stop_timed_out", timeout_s=timeout_s)
        except KafkaException as exc:  # e.g. fenced: nothing of ours is left to deliver
            _log.info("kafka_producer_closed_after_error", error=scrub(str(exc)))
        # librdkafka's threads stop when the client is freed: not called close(), which
        # (confluent-kafka 2.16) fails with a SystemError after an error callback


def translate_librdkafka_error(exc: KafkaException, settings: KafkaSettings) -> KafkaClientError:
    """A KafkaClientError naming the cause of a failed start and the settings to check."""
    error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    text = scrub(error.str() if error is not None else str(exc))
    code = error.code() if error is not None else None
    where = f"{settings.bootstrap_servers} ({settings.security_protocol})"
    if code == KafkaError._AUTHENTICATION or "SASL" in text:
        return KafkaAuthenticationError(
            f"Kafka at {where} refused the {settings.sasl_mechanism} credentials of user "
            f"{settings.username!r}: {text}. Check KAFKA__USERNAME and KAFKA__PASSWORD (the "
            "SCRAM user must exist on the broker)."
        )
    if code == KafkaError._SSL or "SSL" in text:
        return KafkaTlsError(
            f"TLS handshake with Kafka at {where} failed: {text}. Check that "
            "KAFKA__TLS__CA_FILE names the CA that signed the broker certificate and that the "
            "host name in KAFKA__BOOTSTRAP_SERVERS is in that certificate."
        )
    return KafkaUnavailableError(
        f"could not initialise the transactional producer at {where}: {text}. Is the broker "
        "up and the address right?"
    )
