"""Where iot-aggregator writes: the warehouse (aggregates + offsets) and the dead-letter topic."""

from indutech_iot_aggregator.sinks.dead_letters import DeadLetter, DeadLetterSink
from indutech_iot_aggregator.sinks.sql import READINGS, TICKETS, Statements
from indutech_iot_aggregator.sinks.staging import S3ParquetStager
from indutech_iot_aggregator.sinks.warehouse import (
    CopyStager,
    PostgresSink,
    RedshiftSink,
    WarehouseBatch,
    WarehouseSink,
    open_sink,
)

__all__ = [
    "READINGS",
    "TICKETS",
    "CopyStager",
    "DeadLetter",
    "DeadLetterSink",
    "PostgresSink",
    "RedshiftSink",
    "S3ParquetStager",
    "Statements",
    "WarehouseBatch",
    "WarehouseSink",
    "open_sink",
]
