"""The ``identity.changes.v1`` record (``indutech_common.schemas.identity``): the recorded
samples of every format identity-sync has sent still parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indutech_common.schemas import ChangeRecord

SAMPLES = Path(__file__).resolve().parent / "samples" / "identity"


class TestChangeRecordSamples:
    @pytest.mark.parametrize(
        "sample", sorted(SAMPLES.glob("change_record_v1_*.json")), ids=lambda p: p.name
    )
    def test_recorded_sample_parses_and_round_trips(self, sample: Path) -> None:
        """Every recorded record parses, keeps its event id, and is written back the same."""
        raw = json.loads(sample.read_text())
        record = ChangeRecord.model_validate_json(sample.read_text())
        assert record.schema_version == 1
        assert record.event_id == raw["event_id"]
        assert json.loads(record.model_dump_json()) == {"reason": "", **raw}

    def test_quarantine_sample_carries_its_reason(self) -> None:
        """Op quarantine (added 2026-12-04) names why, and no attribute values."""
        record = ChangeRecord.model_validate_json(
            (SAMPLES / "change_record_v1_quarantine.json").read_text()
        )
        assert (record.op, record.attributes) == ("quarantine", [])
        assert "collision" in record.reason

    def test_record_before_reason_existed_parses(self) -> None:
        """A record sent before op quarantine existed (no ``reason``) reads with reason ""."""
        raw = json.loads((SAMPLES / "change_record_v1_before_reason.json").read_text())
        assert "reason" not in raw
        assert ChangeRecord.model_validate(raw).reason == ""
