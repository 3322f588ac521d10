"""Producer and consumer factories: SASL_SSL with SCRAM, idempotent or
transactional producers, read_committed consumers with manual commits.

``start_client`` turns aiokafka's start-up failures into errors that name
the cause (credentials, TLS, or nobody listening) and what to do next.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn

from indutech_common.kafka.config import connection_kwargs
from indutech_common.kafka.exceptions import (
    KafkaAuthenticationError,
    KafkaAuthorizationError,
    KafkaTlsError,
    KafkaUnavailableError,
)
from indutech_common.logging import scrub
from indutech_common.settings import KafkaSettings


def create_producer(
    settings: KafkaSettings, *, transactional_id: str | None = None, **overrides: Any
) -> AIOKafkaProducer:
    """An idempotent producer (acks=all); transactional when ``transactional_id`` is given."""
    kwargs: dict[str, Any] = {
        **connection_kwargs(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "compression_type": None,
    }
    if transactional_id:
        kwargs["transactional_id"] = transactional_id
    kwargs.update(overrides)
    return AIOKafkaProducer(**kwargs)


def create_consumer(
    settings: KafkaSettings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A read_committed consumer that never auto-commits: callers commit after durable work."""
    kwargs: dict[str, Any] = {
        **connection_kwargs(settings),
        "group_id": group_id,
        "isolation_level": "read_committed",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }
    kwargs.update(overrides)
    return AIOKafkaConsumer(*topics, **kwargs)


async def start_client(
    client: AIOKafkaProducer | AIOKafkaConsumer, settings: KafkaSettings, *, timeout_s: float = 30.0
) -> None:
    """Start a client, translating failures into errors that say what to fix.

    aiokafka reports every bootstrap failure as "Unable to bootstrap"; the real
    cause (credentials, TLS, a protocol mismatch) is found by one direct
    connection attempt to the first bootstrap server.
    """
    try:
        await asyncio.wait_for(client.start(), timeout=timeout_s)
    except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
        await _stop_quietly(client)
        cause = exc
        if isinstance(exc, TimeoutError | kafka_errors.KafkaConnectionError):
            cause = await _diagnose(settings, timeout_s=min(timeout_s, 10.0)) or exc
        raise translate_connection_error(cause, settings) from None


async def _diagnose(settings: KafkaSettings, *, timeout_s: float) -> BaseException | None:
    host, _, port = settings.bootstrap_servers.split(",")[0].strip().rpartition(":")
    kwargs = connection_kwargs(settings)
    try:
        connection = await asyncio.wait_for(
            create_conn(
                host.strip("[]"),
                int(port),
                request_timeout_ms=settings.request_timeout_ms,
                ssl_context=kwargs.get("ssl_context"),
                security_protocol=settings.security_protocol,
                sasl_mechanism=kwargs.get("sasl_mechanism", "PLAIN"),
                sasl_plain_username=kwargs.get("sasl_plain_username"),
                sasl_plain_password=kwargs.get("sasl_plain_password"),
            ),
            timeout=timeout_s,
        )
    except (TimeoutError, kafka_errors.KafkaError, OSError, ValueError) as exc:
        return exc
    connection.close()
    return None


AUTHORIZATION_ERRORS = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
    kafka_errors.TransactionalIdAuthorizationFailed,
)


def translate_connection_error(exc: BaseException, settings: KafkaSettings) -> Exception:
    """A KafkaClientError naming the cause and the settings to check."""
    where = f"{settings.bootstrap_servers} ({settings.security_protocol})"
    if isinstance(exc, ssl.SSLError):
        return KafkaTlsError(
            f"TLS handshake with Kafka at {where} failed: {exc.reason or exc}. Check that "
            "KAFKA__TLS__CA_FILE names the CA that signed the broker certificate and that the "
            "host name in KAFKA__BOOTSTRAP_SERVERS is in that certificate."
        )
    if isinstance(exc, kafka_errors.UnsupportedSaslMechanismError):
        return KafkaAuthenticationError(
            f"Kafka at {where} does not offer SASL mechanism {settings.sasl_mechanism}: "
            f"{scrub(str(exc))}. Set KAFKA__SASL_MECHANISM to one the listener enables."
        )
    if isinstance(
        exc, kafka_errors.SaslAuthenticationFailed | kafka_errors.AuthenticationFailedError
    ):
        return KafkaAuthenticationError(
            f"Kafka at {where} refused the {settings.sasl_mechanism} credentials of user "
            f"{settings.username!r}. Check KAFKA__USERNAME and KAFKA__PASSWORD (the SCRAM "
            "user must exist on the broker)."
        )
    if isinstance(exc, AUTHORIZATION_ERRORS):
        return KafkaAuthorizationError(
            f"Kafka at {where} refused user {settings.username!r}: "
            f"{scrub(f'{type(exc).__name__}: {exc}')}. Grant that user the ACL it needs (each "
            "worker's ACLs: docs/deployment.md, deploy/compose/redpanda/init.sh)."
        )
    detail = "timed out" if isinstance(exc, TimeoutError) else scrub(f"{type(exc).__name__}: {exc}")
    hint = ""
    if settings.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        hint = (
            " A plaintext client on a TLS listener fails like this: check that "
            "KAFKA__SECURITY_PROTOCOL matches the listener (SASL_SSL on 9093)."
        )
    return KafkaUnavailableError(
        f"could not connect to Kafka at {where}: {detail}. Is the broker up and the address "
        f"right?{hint}"
    )


STOP_TIMEOUT_S = 2.0


async def stop_client(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    """Stop a client, but never hang: under uvloop, closing a TLS connection can wait forever
    for the peer's close_notify (uvloop#471), which would eat a worker's whole drain deadline."""
    try:
        await asyncio.wait_for(client.stop(), timeout=STOP_TIMEOUT_S)
    except TimeoutError:
        structlog.get_logger(__name__).warning(
            "kafka_client_stop_timed_out", timeout_s=STOP_TIMEOUT_S
        )


async def _stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    # Stopping a client that never fully started may fail too; the start error matters.
    with contextlib.suppress(Exception):
        await client.stop()


async def ping_producer(producer: AIOKafkaProducer) -> None:
    """Readiness: the cluster metadata can be refreshed through this producer."""
    if not await producer.client.force_metadata_update():
        raise KafkaUnavailableError("Kafka metadata refresh failed: no broker answered")
