"""Kafka clients (SASL_SSL + SCRAM, transactional producers, read_committed consumers)."""

from indutech_common.kafka.clients import (
    create_consumer,
    create_producer,
    ping_producer,
    start_client,
    stop_client,
)
from indutech_common.kafka.config import connection_kwargs
from indutech_common.kafka.deadletter import DeadLetterWriter
from indutech_common.kafka.exceptions import (
    KafkaAuthenticationError,
    KafkaAuthorizationError,
    KafkaClientError,
    KafkaTlsError,
    KafkaUnavailableError,
)
from indutech_common.kafka.topics import TopicBinding, TopicContractError, require_topics

__all__ = [
    "DeadLetterWriter",
    "KafkaAuthenticationError",
    "KafkaAuthorizationError",
    "KafkaClientError",
    "KafkaTlsError",
    "KafkaUnavailableError",
    "TopicBinding",
    "TopicContractError",
    "connection_kwargs",
    "create_consumer",
    "create_producer",
    "ping_producer",
    "require_topics",
    "start_client",
    "stop_client",
]
