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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as kafka_errors

from indutech_common.kafka.config import connection_kwargs
from indutech_common.kafka.exceptions import (
    KafkaAuthenticationError,
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
    """Start a client, translating failures into errors that say what to fix."""
    where = f"{settings.bootstrap_servers} ({settings.security_protocol})"
    try:
        await asyncio.wait_for(client.start(), timeout=timeout_s)
    except ssl.SSLError as exc:
        await _stop_quietly(client)
        raise KafkaTlsError(
            f"TLS handshake with Kafka at {where} failed: {exc.reason or exc}. Check "
            "KAFKA__TLS__CA_FILE names the CA that signed the broker certificate and that the "
            "host name in bootstrap_servers is in the certificate."
        ) from None
    except kafka_errors.UnsupportedSaslMechanismError as exc:
        await _stop_quietly(client)
        raise KafkaAuthenticationError(
            f"Kafka at {where} does not offer SASL mechanism {settings.sasl_mechanism}: {exc}"
        ) from None
    except (kafka_errors.SaslAuthenticationFailed, kafka_errors.AuthenticationFailedError):
        await _stop_quietly(client)
        raise KafkaAuthenticationError(
            f"Kafka at {where} refused the {settings.sasl_mechanism} credentials of user "
            f"{settings.username!r}. Check KAFKA__USERNAME and KAFKA__PASSWORD (the SCRAM "
            "user must exist on the broker)."
        ) from None
    except (TimeoutError, kafka_errors.KafkaConnectionError, OSError) as exc:
        await _stop_quietly(client)
        detail = "timed out" if isinstance(exc, TimeoutError) else scrub(str(exc))
        hint = (
            " A PLAINTEXT client on a TLS listener (or the reverse) looks like this too: check "
            "KAFKA__SECURITY_PROTOCOL matches the listener."
            if settings.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT")
            else ""
        )
        raise KafkaUnavailableError(
            f"could not connect to Kafka at {where}: {detail}. Is the broker up and the "
            f"address right?{hint}"
        ) from None


async def _stop_quietly(client: AIOKafkaProducer | AIOKafkaConsumer) -> None:
    # Stopping a client that never fully started may fail too; the start error matters.
    with contextlib.suppress(Exception):
        await client.stop()


async def ping_producer(producer: AIOKafkaProducer) -> None:
    """Readiness: the cluster metadata can be refreshed through this producer."""
    if not await producer.client.force_metadata_update():
        raise KafkaUnavailableError("Kafka metadata refresh failed: no broker answered")
