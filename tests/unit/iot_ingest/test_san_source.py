"""The SAN source: a Source and a Resource the worker adopts (read, ping, close)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indutech_common.protocols import Resource, Source
from indutech_common.settings import KafkaSettings
from indutech_common.tailing import Line, LineKind
from indutech_iot_ingest.config import IotIngestSettings
from indutech_iot_ingest.sources import SanSource


def _settings(san: Path) -> IotIngestSettings:
    kafka = KafkaSettings(username="indutech", password="not-used")
    return IotIngestSettings(kafka=kafka, san_dir=san)


class TestSanSource:
    async def test_reads_the_lines_of_the_routed_files(self, tmp_path: Path) -> None:
        """What the tailer finds under san_dir, as lines of their route."""
        (tmp_path / "sensors").mkdir()
        rows = [json.dumps({"n": n}).encode() for n in range(3)]
        (tmp_path / "sensors" / "a.jsonl").write_bytes(b"\n".join(rows) + b"\n")
        source: Source[list[Line]] = SanSource(_settings(tmp_path))
        try:
            lines = await source.read()
            assert [(line.spec, line.kind, line.data) for line in lines] == [
                ("sensor-jsonl", LineKind.LINE, row) for row in rows
            ]
            assert await source.read() == []
        finally:
            await source.close()

    async def test_ping_says_when_the_san_is_gone(self, tmp_path: Path) -> None:
        """/readyz: the SAN directory answers, or the error names it and what to check."""
        san = tmp_path / "san"
        san.mkdir()
        source = SanSource(_settings(san))
        assert isinstance(source, Resource)
        assert source.name == "san"
        await source.ping()
        san.rename(tmp_path / "unmounted")
        with pytest.raises(FileNotFoundError, match="check the SAN mount"):
            await source.ping()
        await source.close()
