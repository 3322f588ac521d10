"""librdkafka's properties come from the same KafkaSettings as aiokafka's arguments."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from indutech_common.kafka.librdkafka import librdkafka_config
from indutech_common.settings import KafkaSettings, TlsSettings


class TestLibrdkafkaConfig:
    def test_sasl_ssl_with_the_ca_and_hostname_checks(self) -> None:
        """SCRAM over TLS, the CA file given, the broker's host name checked."""
        settings = KafkaSettings(
            bootstrap_servers="broker-1:9093,broker-2:9093",
            username="indutech",
            password=SecretStr("s3cret-value"),
            tls=TlsSettings(ca_file=Path("/etc/ca.crt")),
            client_id="iot-ingest-0",
        )
        config = librdkafka_config(settings)
        assert config["bootstrap.servers"] == "broker-1:9093,broker-2:9093"
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.mechanisms"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "indutech"
        assert config["sasl.password"] == "s3cret-value"
        assert config["ssl.ca.location"] == "/etc/ca.crt"
        assert config["ssl.endpoint.identification.algorithm"] == "https"
        assert config["enable.ssl.certificate.verification"] is True
        assert config["client.id"] == "iot-ingest-0"
        assert "ssl.certificate.location" not in config

    def test_the_system_store_without_a_ca_file_and_client_certificates_when_given(
        self,
    ) -> None:
        """No CA file: the system's CAs (never no verification); mutual TLS keys passed on."""
        settings = KafkaSettings(
            security_protocol="SSL",
            tls=TlsSettings(
                cert_file=Path("/c.pem"), key_file=Path("/k.pem"), key_password=SecretStr("kp")
            ),
        )
        config = librdkafka_config(settings)
        assert config["ssl.ca.location"] == "probe"
        assert config["ssl.certificate.location"] == "/c.pem"
        assert config["ssl.key.location"] == "/k.pem"
        assert config["ssl.key.password"] == "kp"
        assert not any(key.startswith("sasl.") for key in config)

    def test_plaintext_only_when_asked_for(self) -> None:
        """A developer's PLAINTEXT listener gets neither TLS nor SASL properties."""
        config = librdkafka_config(
            KafkaSettings(bootstrap_servers="127.0.0.1:9092", security_protocol="PLAINTEXT")
        )
        assert config["security.protocol"] == "PLAINTEXT"
        assert not any(key.startswith(("ssl.", "sasl.")) for key in config)
