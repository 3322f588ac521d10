"""The messages of sql-backup: ``sql.backup-completed.v1`` lives in the common library (the
contract with sql-to-redshift) and keeps the wire format sql-backup has always sent."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import get_type_hints

import pytest
from pydantic import ValidationError

from indutech_common.schemas import BackupCompleted, BackupEvent, WorkItem
from indutech_sql_backup import announcing, planning

MANIFEST = (
    "s3://indutech-backup/sql-server/erp.sales.orders/year=2026/month=03/day=02/delta/"
    "_manifest.json"
)
# Sent by sql-backup before the model moved (indutech_sql_backup.worker.BackupCompleted).
OLD_MESSAGE = (
    '{"schema_version":1,"event_id":"' + MANIFEST + '","event_time":"2026-03-02T02:14:05.123456Z",'
    '"kind":"delta","database":"erp","table":"sales.orders","day":"2026-03-02",'
    '"manifest":"' + MANIFEST + '","rows":1234,"bytes":56789,"parts":3,'
    '"position_from":"100:0x1","position_to":"200:0x2"}'
)


class TestBackupCompleted:
    def test_an_old_message_parses_and_serialises_byte_for_byte(self) -> None:
        """The moved model reads what sql-backup sent before and writes the same bytes."""
        message = BackupCompleted.model_validate_json(OLD_MESSAGE)
        assert message.event_time == datetime(2026, 3, 2, 2, 14, 5, 123456, tzinfo=UTC)
        assert message.day == date(2026, 3, 2)
        assert (message.parts, message.position_from) == (3, "100:0x1")
        assert message.model_dump_json() == OLD_MESSAGE

    def test_a_full_run_without_start_position_parses(self) -> None:
        payload = json.loads(OLD_MESSAGE) | {"kind": "full", "position_from": None}
        assert BackupCompleted.model_validate(payload).position_from is None

    def test_unknown_fields_are_refused(self) -> None:
        """extra="forbid", as before: a changed contract is a new topic version."""
        with pytest.raises(ValidationError):
            BackupCompleted.model_validate(json.loads(OLD_MESSAGE) | {"surprise": 1})

    def test_sql_backup_uses_the_common_model(self) -> None:
        assert get_type_hints(announcing.completed_message)["return"] is BackupCompleted
        assert get_type_hints(planning.work_items)["return"] == list[WorkItem]
        assert issubclass(WorkItem, BackupEvent)
