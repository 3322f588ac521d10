"""The records of DESIGN.md, validated at the edge and shared by producers and consumers."""

from indutech_common.schemas.iot import (
    ClientTicket,
    Quality,
    SensorReading,
    TicketStatus,
    derive_event_id,
)
from indutech_common.schemas.sql_backup import BackupCompleted, BackupEvent
from indutech_common.schemas.topics import Topics

__all__ = [
    "BackupCompleted",
    "BackupEvent",
    "ClientTicket",
    "Quality",
    "SensorReading",
    "TicketStatus",
    "Topics",
    "derive_event_id",
]
