"""Where iot-aggregator writes: the warehouse (aggregates + offsets) and the dead-letter topic."""

from indutech_iot_aggregator.sinks.dead_letters import DeadLetter, DeadLetterSink
from indutech_iot_aggregator.sinks.sql import READINGS, TICKETS, Statements
from indutech_iot_aggregator.sinks.warehouse import WarehouseBatch, WarehouseSink

__all__ = [
    "READINGS",
    "TICKETS",
    "DeadLetter",
    "DeadLetterSink",
    "Statements",
    "WarehouseBatch",
    "WarehouseSink",
]
