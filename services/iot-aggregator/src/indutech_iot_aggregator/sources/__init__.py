"""Where iot-aggregator reads from: the iot.* topics through a read_committed consumer group."""

from indutech_iot_aggregator.sources.kafka import TopicSource
from indutech_iot_aggregator.sources.records import RecordDecoder

__all__ = ["RecordDecoder", "TopicSource"]
