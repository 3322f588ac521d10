"""indutech_devtools.iot, the SAN generator: deterministic under a seed, realistic, rotating
and compressing; and its command line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_devtools.iot import GenerateOptions, generate, main, records


class TestGenerator:
    def test_same_seed_same_records(self, tmp_path: Path) -> None:
        """The records (and their event ids) depend only on the seed."""
        first = list(records(GenerateOptions(directory=tmp_path, count=500, seed=3)))
        again = list(records(GenerateOptions(directory=tmp_path, count=500, seed=3)))
        other = list(records(GenerateOptions(directory=tmp_path, count=500, seed=4)))
        assert first == again
        assert first != other
        assert len({r["event_id"] for _, r in first}) == 500

    def test_written_files_hold_every_record_valid(self, tmp_path: Path) -> None:
        """JSONL and CSV files, rotated and gzipped, hold exactly the generated records."""
        options = GenerateOptions(
            directory=tmp_path, rate=0, count=1200, seed=2, rotate_every=100, gzip_rotated=True
        )
        assert generate(options) == 1200
        ids: list[str] = []
        for path in sorted(tmp_path.rglob("*.jsonl*")):
            text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            for raw in text.decode().splitlines():
                record = json.loads(raw)
                model = SensorReading if "sensor_id" in record else ClientTicket
                model.model_validate(record)
                ids.append(record["event_id"])
        csv_rows = 0
        for path in sorted(tmp_path.rglob("*.csv*")):
            text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            csv_rows += len(text.decode().splitlines()) - 1
        assert any(p.name.endswith(".jsonl.gz") for p in tmp_path.rglob("*"))
        assert len(ids) + csv_rows == 1200
        expected = {r["event_id"] for _, r in records(options)}
        assert set(ids) <= expected

    def test_tickets_carry_two_place_revenue_text(self, tmp_path: Path) -> None:
        """Revenue is a decimal string with two places, never a float."""
        tickets = [
            r
            for kind, r in records(GenerateOptions(directory=tmp_path, count=300))
            if kind == "ticket"
        ]
        assert tickets
        for ticket in tickets:
            assert isinstance(ticket["revenue"], str)
            assert Decimal(ticket["revenue"]).as_tuple().exponent == -2


class TestCommandLine:
    def test_writes_the_requested_records(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """No worker settings needed: the directory and a count are enough."""
        assert main(["--dir", str(tmp_path), "--count", "50", "--rate", "0"]) == 0
        assert "wrote 50 records" in capsys.readouterr().out
        assert list(tmp_path.rglob("*.jsonl"))

    def test_refuses_an_unknown_format(self, tmp_path: Path) -> None:
        """--formats lists jsonl and/or csv; anything else is a usage error (exit 2)."""
        with pytest.raises(SystemExit) as info:
            main(["--dir", str(tmp_path), "--count", "1", "--formats", "xml"])
        assert info.value.code == 2

    def test_runs_as_a_module(self) -> None:
        """`python -m indutech_devtools.iot --help` is the documented entry."""
        result = subprocess.run(
            [sys.executable, "-m", "indutech_devtools.iot", "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert result.returncode == 0
        assert "--rotate-every" in result.stdout
