"""Keyword arguments shared by every aiokafka client, built from ``KafkaSettings``."""

from __future__ import annotations

from typing import Any

from indutech_common.settings import KafkaSettings
from indutech_common.tls import create_client_ssl_context


def connection_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Connection, TLS and SASL arguments for AIOKafkaProducer/AIOKafkaConsumer/admin."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.client_id:
        kwargs["client_id"] = settings.client_id
    if settings.security_protocol in ("SASL_SSL", "SSL"):
        kwargs["ssl_context"] = create_client_ssl_context(settings.tls)
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.username
        kwargs["sasl_plain_password"] = (
            settings.password.get_secret_value() if settings.password else None
        )
    return kwargs
