"""What the SAN holds besides plain files: symbolic links, rotated names, files no route
matches, and a last line without its newline. Nothing outside the SAN dir is read,
nothing under it is skipped in silence, and every line arrives once."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

from structlog.testing import capture_logs

from indutech_iot_ingest.worker import IotIngestWorker
from tests.integration.iot_ingest.conftest import (
    IngestTopics,
    ingest_settings,
    read_committed,
    running,
)
from tests.support.stack import StackSettings

WORKER = "iot-ingest"


def _reading(event_id: str, i: int = 0) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "sensor_id": f"s-{i % 4}",
            "site": "gdansk",
            "metric": "vibration",
            "value": 1.5 + i,
            "unit": "mm/s",
            "event_time": f"2026-04-01T08:00:{i % 60:02d}Z",
        }
    )


def _lines(prefix: str, start: int, stop: int) -> str:
    return "".join(_reading(f"{prefix}-{i}", i) + "\n" for i in range(start, stop))


def _ids(prefix: str, start: int, stop: int) -> set[str]:
    return {f"{prefix}-{i}" for i in range(start, stop)}


def _sample(worker: IotIngestWorker, name: str, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, {"worker": WORKER, **labels})
    return 0.0 if value is None else float(value)


def _compress(path: Path) -> Path:
    """As logrotate does: write the .gz under a hidden name, rename it, drop the original."""
    target = path.with_name(path.name + ".gz")
    temporary = path.with_name(f".{target.name}.tmp")
    temporary.write_bytes(gzip.compress(path.read_bytes()))
    temporary.rename(target)
    path.unlink()
    return target


class TestSymlinks:
    async def test_links_leading_outside_the_san_send_nothing_and_are_counted(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str, tmp_path: Path
    ) -> None:
        """A link to a file and one to a directory outside the SAN dir: no record and no dead
        letter from them, one refusal each in the log and in indutech_files_skipped."""
        outside = tmp_path / "outside"
        (outside / "dir").mkdir(parents=True)
        (outside / "secret.jsonl").write_text(_lines("secret", 0, 3) + "not json\n")
        (outside / "dir" / "inner.jsonl").write_text(_lines("inner", 0, 3))
        (san / "sensors" / "own.jsonl").write_text(_lines("own", 0, 4))
        (san / "sensors" / "link.jsonl").symlink_to(outside / "secret.jsonl")
        (san / "sensors" / "plant").symlink_to(outside / "dir")
        with capture_logs() as logs:
            async with running(ingest_settings(stack, topics, san, unique)) as worker:
                found = await read_committed(stack, topics, expected=4, settle_s=2.0)
                refused = _sample(worker, "indutech_files_skipped_total", reason="symlink_outside")
        assert set(found.ids) == _ids("own", 0, 4)
        assert found.duplicates == {}
        assert found.dead_letters == []
        assert refused == 2
        warned = sorted(entry["path"] for entry in logs if entry["event"] == "file_refused")
        assert warned == [str(san / "sensors" / "link.jsonl"), str(san / "sensors" / "plant")]


class TestRotatedNames:
    async def test_rotated_and_compressed_files_are_read_once_through_restarts(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str
    ) -> None:
        """line-a.jsonl → .1 → .1.gz → .2.gz while running and while stopped, a dateext file
        and an unmatched file: every line once, the unmatched file logged and counted once."""
        sensors = san / "sensors"
        active = sensors / "line-a.jsonl"
        active.write_text(_lines("a", 0, 10))
        settings = ingest_settings(stack, topics, san, unique)
        async with running(settings):
            await read_committed(stack, topics, expected=10, settle_s=0)
            with active.open("a") as out:
                out.write(_lines("a", 10, 15))
            active.rename(sensors / "line-a.jsonl.1")
            active.write_text(_lines("b", 0, 5))
            await read_committed(stack, topics, expected=20, settle_s=0)
            _compress(sensors / "line-a.jsonl.1")
            await asyncio.sleep(1.0)  # the .gz settles (0.2 s) and is recognised, not re-read
        # while the worker is down: lines appended, then a rotation; a dateext file appears
        with active.open("a") as out:
            out.write(_lines("b", 5, 8))
        (sensors / "line-a.jsonl.1.gz").rename(sensors / "line-a.jsonl.2.gz")
        active.rename(sensors / "line-a.jsonl.1")
        active.write_text(_lines("c", 0, 4))
        (sensors / "line-d.jsonl-20261204.gz").write_bytes(
            gzip.compress(_lines("d", 0, 6).encode())
        )
        (sensors / "notes.txt").write_text("not a record\n")
        with capture_logs() as logs:
            async with running(settings) as worker:
                found = await read_committed(stack, topics, expected=33, settle_s=2.0)
                unmatched = _sample(worker, "indutech_files_skipped_total", reason="no_route")
        expected = _ids("a", 0, 15) | _ids("b", 0, 8) | _ids("c", 0, 4) | _ids("d", 0, 6)
        assert found.duplicates == {}
        assert set(found.ids) == expected
        assert found.dead_letters == []
        assert unmatched == 1
        warned = [entry["path"] for entry in logs if entry["event"] == "file_unmatched"]
        assert warned == [str(sensors / "notes.txt")]


class TestUnterminatedLastLine:
    async def test_the_last_line_of_a_settled_file_is_ingested_once(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str
    ) -> None:
        """A finished file whose last line has no newline, and a short file of one such line:
        both arrive after last_line_settle_s, counted in indutech_unterminated_lines."""
        finished = san / "sensors" / "finished.jsonl"
        finished.write_text(_lines("f", 0, 3) + _reading("f-3", 3))
        short = san / "sensors" / "short.jsonl"
        short.write_text(_reading("s-0"))
        settings = ingest_settings(stack, topics, san, unique, last_line_settle_s=1.0)
        started = time.monotonic()
        async with running(settings) as worker:
            found = await read_committed(stack, topics, expected=5, settle_s=2.0)
            waited = time.monotonic() - started
            counted = _sample(worker, "indutech_unterminated_lines_total")
            states = {Path(s.path).name: s for s in worker.tailer.states.values()}
        assert set(found.ids) == _ids("f", 0, 4) | {"s-0"}
        assert found.duplicates == {}
        assert found.dead_letters == []
        assert counted == 2
        assert waited >= 1.0
        assert states["short.jsonl"].committed_offset == short.stat().st_size
        assert states["finished.jsonl"].committed_offset == finished.stat().st_size
