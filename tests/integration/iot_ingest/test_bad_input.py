"""Bad lines are dead-lettered with their reason, file and offset; nothing else is lost."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

from indutech_common.schemas import derive_event_id
from tests.integration.iot_ingest.conftest import (
    IngestTopics,
    ingest_settings,
    read_committed,
    running,
)
from tests.support.stack import StackSettings

MAX_LINE = 64 * 1024


def _reading(i: int, **changes: object) -> bytes:
    record: dict[str, object] = {
        "event_id": f"good-{i}",
        "sensor_id": f"s-{i}",
        "site": "porto",
        "metric": "pressure",
        "value": 6.1,
        "unit": "bar",
        "event_time": "2026-03-01T10:00:00+01:00",
    }
    record.update(changes)
    return json.dumps({k: v for k, v in record.items() if v is not None}).encode()


class TestBadInput:
    async def test_each_bad_line_is_dead_lettered_and_the_rest_arrives(  # noqa: PLR0915 - one story
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str
    ) -> None:
        """Malformed JSON, wrong types, missing fields, garbage, a 10 MB line, a cut gzip."""
        bad = {
            "invalid_json": b'{"sensor_id": "s-x", ',
            "schema_violation": _reading(900, value="hot", event_id="bad-type"),
            "missing": _reading(901, site=None, event_id="bad-missing"),
            "invalid_encoding": b"\xff\xfe\x00garbage\x81\x82",
            "line_too_long": b'{"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}',
            "not_an_object": b"[1, 2, 3]",
        }
        lines = [_reading(0), *bad.values(), _reading(1), _reading(2, event_id=None)]
        data = b"".join(line + b"\n" for line in lines)
        path = san / "sensors" / "mixed.jsonl"
        path.write_bytes(data)
        offsets = {}
        position = 0
        for name, line in zip(["good-0", *bad, "good-1", "derived"], lines, strict=True):
            offsets[name] = position
            position += len(line) + 1
        good_gzip = [_reading(i) for i in range(10, 40)]
        compressed = gzip.compress(b"".join(line + b"\n" for line in good_gzip))
        cut = compressed[: len(compressed) // 2]
        (san / "sensors" / "cut.jsonl.gz").write_bytes(cut)
        readable = zlib.decompressobj(wbits=31).decompress(cut)
        complete_lines = readable.count(b"\n")
        cut_offset = readable.rfind(b"\n") + 1  # where the cut line starts
        (san / "sensors" / "not-gzip.jsonl.gz").write_bytes(b"plain text, not gzip\n")

        settings = ingest_settings(stack, topics, san, unique, max_line_bytes=MAX_LINE)
        async with running(settings):
            found = await read_committed(
                stack, topics, expected=3 + complete_lines, expected_dead=8
            )
        good = {event_id for event_id in found.ids if event_id.startswith("good-")}
        assert {"good-0", "good-1"} <= good
        assert found.duplicates == {}
        reasons = {
            headers["reason"].decode(): (value, headers) for value, headers in found.dead_letters
        }
        assert set(reasons) == {
            "invalid_json",
            "schema_violation",
            "invalid_encoding",
            "line_too_long",
            "not_an_object",
            "truncated_gzip",
            "corrupt_gzip",
        }
        assert len(found.dead_letters) == 8  # nothing else was refused
        schema = [h for _, h in found.dead_letters if h["reason"] == b"schema_violation"]
        # the wrong type and the missing field, each at its own offset with the field named
        assert sorted(int(h["offset"]) for h in schema) == [
            offsets["schema_violation"],
            offsets["missing"],
        ]
        by_offset = {int(h["offset"]): h for h in schema}
        assert b"value" in by_offset[offsets["schema_violation"]]["error"]
        assert b"site" in by_offset[offsets["missing"]]["error"]
        assert all(h["file"] == str(path).encode() for h in schema)
        for name in ("invalid_json", "invalid_encoding", "not_an_object", "line_too_long"):
            value, headers = reasons[name]
            assert headers["file"] == str(path).encode()
            assert headers["source"] == str(path).encode()
            assert headers["offset"] == str(offsets[name]).encode()
            assert headers["error"]
        value, headers = reasons["line_too_long"]
        assert len(value) < MAX_LINE + 1
        assert b"10485771 bytes" in headers["error"]
        # the line without event_id gets the id derived from the fingerprint and its offset
        fingerprint = reasons["invalid_json"][1]["fingerprint"].decode()
        assert derive_event_id(fingerprint, offsets["derived"]) in found.ids
        # the readable part of the cut gzip arrived; the cut line is the dead letter
        arrived_from_gzip = good - {"good-0", "good-1"}
        assert arrived_from_gzip
        assert arrived_from_gzip == {f"good-{i}" for i in range(10, 10 + complete_lines)}
        truncated = reasons["truncated_gzip"][1]
        assert truncated["file"].endswith(b"cut.jsonl.gz")
        assert int(truncated["offset"]) == cut_offset  # in the decompressed content
        assert truncated["error"]
        corrupt = reasons["corrupt_gzip"][1]
        assert corrupt["file"].endswith(b"not-gzip.jsonl.gz")
        assert int(corrupt["offset"]) == 0
        # nothing else lost: every good line and every readable gzip line, once
        assert sum(found.ids.values()) == 3 + complete_lines
