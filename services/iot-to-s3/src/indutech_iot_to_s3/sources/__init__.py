"""Where iot-to-s3 reads from: the iot.* topics through a read_committed consumer group."""

from indutech_iot_to_s3.sources.records import DecodedBatch, RecordCodec, Rejected

__all__ = ["DecodedBatch", "RecordCodec", "Rejected"]
