"""Where iot-ingest writes: records, dead letters and checkpoints, in one Kafka transaction."""

from indutech_iot_ingest.sinks.exceptions import CheckpointTopicMissingError, SinkError
from indutech_iot_ingest.sinks.kafka import TransactionalSink, load_checkpoints

__all__ = ["CheckpointTopicMissingError", "SinkError", "TransactionalSink", "load_checkpoints"]
