"""sql-backup's contracts (indutech_common.schemas.sql_backup): every recorded sample of the
bucket objects and messages parses with the common models, and the key layout is the one
sql-backup wrote when the samples were recorded."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from indutech_common.schemas.sql_backup import (
    BackupCompleted,
    BackupDir,
    FailureRecord,
    Manifest,
    PartRecord,
    Plan,
    WorkItem,
    is_manifest_key,
    table_root,
)

SAMPLES = Path(__file__).parent / "samples" / "sql_backup"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def same_json(model: BaseModel, text: str) -> bool:
    """The model writes back what it read (nothing dropped, renamed or re-typed)."""
    written: object = json.loads(model.model_dump_json())
    recorded: object = json.loads(text)
    return written == recorded


class TestRecordedSamplesV1:
    """Objects and messages written by sql-backup before the move still parse, unchanged."""

    def test_plan(self) -> None:
        plan = Plan.model_validate_json(sample("plan.v1.json"))
        assert (plan.kind, plan.qualified, plan.snapshot) == ("delta", "sales.order_lines", True)
        assert plan.key == ("order_id", "line_no")
        assert [c.chunk for c in plan.chunks] == [0, 1]
        assert plan.chunks[0].lo is None
        assert plan.position_from == "1000:0x00000000000A1B2C"
        assert not plan.reads_changes  # a re-snapshot replaces the table
        assert plan.topic_key == b"erp.sales.order_lines"
        assert same_json(plan, sample("plan.v1.json"))

    def test_plan_written_before_re_snapshots(self) -> None:
        """Plans older than the snapshot fields (and column specs without arrow_type)."""
        plan = Plan.model_validate_json(sample("plan_before_snapshots.v1.json"))
        assert (plan.kind, plan.snapshot, plan.snapshot_reason) == ("full", False, None)
        assert plan.columns[0].arrow_type is None

    @pytest.mark.parametrize(
        "name", ["part_record.v1.json", "part_record_delta.v1.json", "part_record_minimal.v1.json"]
    )
    def test_part_record(self, name: str) -> None:
        record = PartRecord.model_validate_json(sample(name))
        assert record.key.endswith(f"part-{record.chunk:05d}.parquet")
        assert len(record.sha256) == 64

    def test_delta_part_record_counts_its_ops(self) -> None:
        record = PartRecord.model_validate_json(sample("part_record_delta.v1.json"))
        assert record.ops == {"U": 40, "D": 2}
        assert record.arrow_schema[0].name == "_op"

    def test_manifest(self) -> None:
        manifest = Manifest.model_validate_json(sample("manifest.v1.json"))
        assert manifest.rows == sum(p.rows for p in manifest.parts) == 251_234
        assert [p.chunk for p in manifest.parts] == [c.chunk for c in manifest.plan.chunks]
        assert manifest.parts[0].arrow_schema[2].arrow_type == "decimal128(18, 2)"
        assert manifest.position_to == manifest.plan.position_to
        assert same_json(manifest, sample("manifest.v1.json"))

    def test_failure_record(self) -> None:
        failure = FailureRecord.model_validate_json(sample("failure_record.v1.json"))
        assert (failure.chunk, failure.attempts) == (1, 3)
        assert failure.failed_at == datetime(2026, 3, 2, 2, 10, tzinfo=UTC)

    def test_work_item_byte_for_byte(self) -> None:
        """Work items on the topic are read as they were sent, and written the same way."""
        text = sample("work_item.v1.json").strip()
        item = WorkItem.model_validate_json(text)
        assert (item.chunk, item.chunks, item.table) == (1, 2, "sales.order_lines")
        assert item.model_dump_json() == text

    def test_announced_marker_is_the_completed_message(self) -> None:
        announced = BackupCompleted.model_validate_json(sample("announced.v1.json"))
        manifest = Manifest.model_validate_json(sample("manifest.v1.json"))
        assert announced.rows == manifest.rows
        assert announced.manifest.endswith("/delta/_manifest.json")

    def test_unknown_fields_are_refused(self) -> None:
        """extra="forbid": a changed layout is a new version, never a silent extra field."""
        payload = json.loads(sample("plan.v1.json")) | {"surprise": 1}
        with pytest.raises(ValidationError):
            Plan.model_validate(payload)


class TestKeyLayoutV1:
    """BackupDir gives the keys sql-backup wrote when the samples were recorded."""

    def test_recorded_keys(self) -> None:
        keys = json.loads(sample("keys.v1.json"))
        directory = BackupDir(
            prefix=keys["prefix"],
            database=keys["database"],
            schema=keys["schema"],
            table=keys["table"],
            day=date.fromisoformat(keys["day"]),
            kind=keys["kind"],
        )
        got = {
            "table_root": directory.table_root,
            "base": directory.base,
            "plan": directory.plan,
            "manifest": directory.manifest,
            "announced": directory.announced,
            "part_1": directory.part(1),
            "record_1": directory.record(1),
            "failure_1": directory.failure(1),
            "failures_prefix": directory.failures_prefix,
        }
        assert got == {name: keys[name] for name in got}

    def test_of_a_plan_matches_its_manifest_parts(self) -> None:
        manifest = Manifest.model_validate_json(sample("manifest.v1.json"))
        directory = BackupDir.of("", manifest.plan)
        assert [p.key for p in manifest.parts] == [directory.part(p.chunk) for p in manifest.parts]
        assert is_manifest_key(directory.manifest)
        assert not is_manifest_key(directory.plan)
        assert directory.record(7).startswith(directory.parts_prefix)

    def test_prefix_goes_first(self) -> None:
        assert table_root("tests/x/", "erp", "s", "t") == "tests/x/sql-server/erp.s.t/"
