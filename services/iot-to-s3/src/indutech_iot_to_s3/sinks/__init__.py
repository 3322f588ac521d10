"""Where iot-to-s3 writes: Parquet objects in the lake, and the intents that precede them."""

from indutech_iot_to_s3.errors import IntentConflictError, LakeError, S3TransientError
from indutech_iot_to_s3.sinks.lake import Intent, IntentJournal, LakeWriter, S3Calls, is_transient
from indutech_iot_to_s3.sinks.parquet import ParquetEncoder

__all__ = [
    "Intent",
    "IntentConflictError",
    "IntentJournal",
    "LakeError",
    "LakeWriter",
    "ParquetEncoder",
    "S3Calls",
    "S3TransientError",
    "is_transient",
]
