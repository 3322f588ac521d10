"""Errors of the Kafka clients, each naming its cause and what to do."""

from __future__ import annotations

from indutech_common.errors import DependencyUnavailableError, IndutechError


class KafkaClientError(IndutechError):
    """Base of the Kafka errors raised by the common library."""


class KafkaAuthenticationError(KafkaClientError):
    """The broker refused the SASL credentials."""


class KafkaAuthorizationError(KafkaClientError):
    """The broker refused the user an operation on a topic, group, transactional id or the
    cluster: an ACL is missing."""


class KafkaTlsError(KafkaClientError):
    """The TLS handshake failed: wrong CA, wrong host name, or a non-TLS listener."""


class KafkaUnavailableError(KafkaClientError, DependencyUnavailableError):
    """No broker answered at the bootstrap address in time."""
