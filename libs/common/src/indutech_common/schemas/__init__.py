"""The records of DESIGN.md, validated at the edge and shared by producers and consumers."""

from indutech_common.schemas.identity import ChangeOp, ChangeRecord
from indutech_common.schemas.iot import (
    ClientTicket,
    Quality,
    SensorReading,
    TicketStatus,
    derive_event_id,
)
from indutech_common.schemas.sql_backup import (
    BackupCompleted,
    BackupDir,
    BackupEvent,
    FailureRecord,
    Manifest,
    PartRecord,
    Plan,
    WorkItem,
)
from indutech_common.schemas.topics import CONTRACT, Topics, TopicSpec, contract_spec

__all__ = [
    "CONTRACT",
    "BackupCompleted",
    "BackupDir",
    "BackupEvent",
    "ChangeOp",
    "ChangeRecord",
    "ClientTicket",
    "FailureRecord",
    "Manifest",
    "PartRecord",
    "Plan",
    "Quality",
    "SensorReading",
    "TicketStatus",
    "TopicSpec",
    "Topics",
    "WorkItem",
    "contract_spec",
    "derive_event_id",
]
