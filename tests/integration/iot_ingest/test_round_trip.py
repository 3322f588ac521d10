"""Generated SAN files reach the topics exactly once, through appends, rotation and truncation."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from indutech_devtools.iot import GenerateOptions, generate, records
from tests.integration.iot_ingest.conftest import (
    IngestTopics,
    generated_ids,
    ingest_settings,
    read_committed,
    running,
)
from tests.support.stack import StackSettings


class TestRoundTrip:
    async def test_jsonl_csv_and_gzip_files_arrive_exactly_once(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str
    ) -> None:
        """Every generated line (JSONL, CSV with BOM, gzip-rotated) is on its topic once."""
        options = GenerateOptions(
            directory=san, rate=0, count=3000, seed=7, rotate_every=400, gzip_rotated=True, bom=True
        )
        assert generate(options) == 3000
        expected = generated_ids(records(options))
        assert len(expected) == 3000
        async with running(ingest_settings(stack, topics, san, unique)):
            found = await read_committed(stack, topics, expected=3000)
        assert found.duplicates == {}
        assert found.ids == expected
        assert found.dead_letters == []
        kinds = {"sensor_id" in value for value in found.values}
        assert kinds == {True, False}
        tickets = [v for v in found.values if "ticket_id" in v]
        assert all(isinstance(t["revenue"], str) and "." in t["revenue"] for t in tickets)
        assert found.by_topic[topics.ticket] == len(tickets)

    async def test_appends_rotation_truncation_and_late_files(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str
    ) -> None:
        """A live writer rotating by rename (plain and gzip), a truncated file and a late file."""
        options = GenerateOptions(
            directory=san, rate=800, count=2400, seed=11, rotate_every=300, gzip_rotated=True
        )
        expected = generated_ids(records(options))
        truncated = san / "sensors" / "truncated.jsonl"
        first = [_reading(f"trunc-a-{i}", i) for i in range(20)]
        second = [_reading(f"trunc-b-{i}", i) for i in range(30)]
        late = [_reading(f"late-{i}", i) for i in range(50)]
        truncated.write_text("".join(line + "\n" for line in first))
        async with running(ingest_settings(stack, topics, san, unique)):
            writer = threading.Thread(target=generate, args=(options,))
            writer.start()
            await read_committed(stack, topics, expected=20, settle_s=0)
            truncated.write_text("".join(line + "\n" for line in second))  # truncate + rewrite
            await asyncio.sleep(0.5)
            (san / "sensors" / "late").mkdir()
            (san / "sensors" / "late" / "late.jsonl").write_text(
                "".join(line + "\n" for line in late)
            )
            await asyncio.to_thread(writer.join, 30)
            total = len(expected) + len(first) + len(second) + len(late)
            found = await read_committed(stack, topics, expected=total, timeout_s=40)
        for line in first + second + late:
            expected[json.loads(line)["event_id"]] += 1
        assert found.duplicates == {}
        assert found.ids == expected


def _reading(event_id: str, i: int) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "sensor_id": f"s-{i % 3}",
            "site": "lyon",
            "metric": "temperature",
            "value": 20.5 + i,
            "unit": "C",
            "event_time": f"2026-02-01T00:00:{i % 60:02d}Z",
        }
    )
