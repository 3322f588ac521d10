"""Verified TLS contexts for every client: CA checks and hostname checks always on."""

from __future__ import annotations

import ssl

import structlog

from indutech_common.settings import TlsSettings

_log = structlog.get_logger(__name__)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def create_client_ssl_context(settings: TlsSettings | None = None) -> ssl.SSLContext:
    """A client context that verifies the peer's certificate and host name.

    There is deliberately no switch to turn verification off: a peer with a
    private CA is trusted by giving its CA file, not by trusting everyone.
    """
    settings = settings or TlsSettings()
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.ca_file) if settings.ca_file else None,
    )
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = _VERSIONS[settings.min_version]
    if settings.cert_file and settings.key_file:
        context.load_cert_chain(
            certfile=str(settings.cert_file),
            keyfile=str(settings.key_file),
            password=settings.key_password.get_secret_value() if settings.key_password else None,
        )
    # Which CA was loaded helps at 3 a.m.; key material is never logged.
    _log.debug(
        "tls_context_created",
        ca_file=str(settings.ca_file) if settings.ca_file else "system",
        client_cert=bool(settings.cert_file),
        min_version=settings.min_version,
    )
    return context
