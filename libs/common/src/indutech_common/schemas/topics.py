"""Topic names of DESIGN.md, in one place."""

from __future__ import annotations

from typing import Final


class Topics:
    SENSOR_READINGS: Final = "iot.sensor-readings.v1"
    CLIENT_TICKETS: Final = "iot.client-tickets.v1"
    DEAD_LETTER: Final = "iot.dead-letter.v1"
    INGEST_CHECKPOINTS: Final = "iot.ingest-checkpoints.v1"
    BACKUP_WORK: Final = "sql.backup-work.v1"
    BACKUP_COMPLETED: Final = "sql.backup-completed.v1"
    IDENTITY_CHANGES: Final = "identity.changes.v1"
