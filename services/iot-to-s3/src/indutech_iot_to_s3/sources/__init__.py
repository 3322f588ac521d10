"""Where iot-to-s3 reads from: the iot.* topics through a read_committed consumer group."""

from indutech_iot_to_s3.sources.exceptions import InvalidRecordError, SourceError
from indutech_iot_to_s3.sources.records import RecordCodec

__all__ = ["InvalidRecordError", "RecordCodec", "SourceError"]
