"""What a refused Kafka operation becomes: an error naming the user and what to grant."""

from __future__ import annotations

import pytest
from aiokafka import errors as kafka_errors
from pydantic import SecretStr

from indutech_common.kafka import KafkaAuthorizationError, KafkaUnavailableError
from indutech_common.kafka.clients import translate_connection_error
from indutech_common.settings import KafkaSettings

SETTINGS = KafkaSettings(
    bootstrap_servers="broker:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    username="iot-to-s3",
    password=SecretStr("s3cr3t-not-in-messages"),
)


@pytest.mark.parametrize(
    "refusal",
    [
        kafka_errors.TopicAuthorizationFailedError("iot.sensor-readings.v1"),
        kafka_errors.GroupAuthorizationFailedError("iot-to-s3"),
        kafka_errors.ClusterAuthorizationFailedError(),
        kafka_errors.TransactionalIdAuthorizationFailed("iot-to-s3.iot.sensor-readings.v1.0"),
    ],
)
def test_an_acl_refusal_names_the_user_and_the_acl_to_grant(refusal: Exception) -> None:
    error = translate_connection_error(refusal, SETTINGS)
    assert isinstance(error, KafkaAuthorizationError)
    assert not isinstance(error, KafkaUnavailableError)  # not "is the broker up?"
    text = str(error)
    assert "refused user 'iot-to-s3'" in text
    assert type(refusal).__name__ in text
    assert "Grant that user the ACL" in text
    assert "s3cr3t" not in text
