"""Where iot-ingest writes: records, dead letters and checkpoints, in one Kafka transaction."""

from indutech_iot_ingest.errors import CheckpointTopicMissingError, SinkError
from indutech_iot_ingest.sinks.kafka import TransactionalSink, load_checkpoints
from indutech_iot_ingest.sinks.store import DeadLetterStore, StoredLine

__all__ = [
    "CheckpointTopicMissingError",
    "DeadLetterStore",
    "SinkError",
    "StoredLine",
    "TransactionalSink",
    "load_checkpoints",
]
