"""A realistic SAN writer: sensor readings and client tickets at a chosen rate.

``python -m indutech_devtools.iot --dir D --rate 200 --duration 60`` (``--help``
for the rest) writes the files iot-ingest reads: the demo, the tests and the
benchmarks use it. It was ``iot-ingest generate`` before; a production worker
carries no demo data generator.

Deterministic under a seed (the records, their event ids and the files they
go to), so tests can count every generated event id. Sensors belong to sites
and measure one metric in its unit, drifting as a random walk, with gaps
(missed readings) and the odd uncertain/bad quality; tickets belong to
customers in regions, with revenue as a 2-place decimal string and a latency.
Files are JSON Lines and/or CSV under ``sensors/`` and ``tickets/``, rotated by
rename after ``rotate_every`` records (``readings.jsonl`` →
``readings-00001.jsonl``), optionally gzip-compressed once rotated (written to
a hidden temporary name, then renamed, as logrotate does).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import random
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

Kind = Literal["sensor", "ticket"]
Format = Literal["jsonl", "csv"]

SENSOR_COLUMNS = (
    "event_id",
    "sensor_id",
    "site",
    "metric",
    "value",
    "unit",
    "event_time",
    "quality",
)
TICKET_COLUMNS = (
    "event_id",
    "ticket_id",
    "customer_id",
    "region",
    "event_time",
    "revenue",
    "latency_ms",
    "status",
)
_METRICS = (
    ("temperature", "C", 60.0, 0.05),
    ("pressure", "bar", 6.0, 0.01),
    ("vibration", "mm/s", 2.5, 0.02),
    ("power", "kW", 120.0, 0.3),
    ("humidity", "%", 45.0, 0.05),
)
_SITES = ("lyon", "porto", "gdansk", "monterrey", "pune", "wuxi")
_REGIONS = ("emea-west", "emea-east", "amer-north", "amer-south", "apac")
_STATUSES = ("open", "resolved", "closed")
_DIRS: dict[Kind, tuple[str, str]] = {
    "sensor": ("sensors", "readings"),
    "ticket": ("tickets", "tickets"),
}


@dataclass
class _Sensor:
    sensor_id: str
    site: str
    metric: str
    unit: str
    value: float
    drift: float
    gap_rate: float


class RecordFactory:
    """Deterministic records under a seed: the same seed gives the same records in order."""

    def __init__(
        self,
        *,
        seed: int = 1,
        sensors: int = 60,
        customers: int = 200,
        ticket_ratio: float = 0.2,
        start: datetime | None = None,
        step_s: float = 0.005,
        event_id_ratio: float = 1.0,
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        rng = self.rng
        self.ticket_ratio = ticket_ratio
        self.event_id_ratio = event_id_ratio
        self.clock = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.step = timedelta(seconds=step_s)
        self.sensors = []
        for i in range(sensors):
            metric, unit, base, drift = _METRICS[i % len(_METRICS)]
            self.sensors.append(
                _Sensor(
                    sensor_id=f"{_SITES[i % len(_SITES)][:3]}-{metric[:4]}-{i:04d}",
                    site=_SITES[i % len(_SITES)],
                    metric=metric,
                    unit=unit,
                    value=base * rng.uniform(0.8, 1.2),
                    drift=drift * rng.uniform(-1, 1),
                    gap_rate=rng.choice((0.0, 0.0, 0.01, 0.05)),
                )
            )
        self.customers = [(f"CUST-{i:05d}", rng.choice(_REGIONS)) for i in range(customers)]
        self.tickets = 0

    def next(self) -> tuple[Kind, dict[str, Any]]:
        """The next record: its kind and its fields (revenue as text, time ISO 8601 UTC)."""
        rng = self.rng
        self.clock += self.step
        if rng.random() < self.ticket_ratio:
            return "ticket", self._ticket()
        sensor = rng.choice(self.sensors)
        while rng.random() < sensor.gap_rate:  # a gap: this sensor missed a reading
            sensor.value += sensor.drift
            sensor = rng.choice(self.sensors)
        sensor.value += sensor.drift + rng.gauss(0, abs(sensor.value) * 0.002)
        quality = rng.choices(("good", "uncertain", "bad"), weights=(97, 2, 1))[0]
        record = {
            "sensor_id": sensor.sensor_id,
            "site": sensor.site,
            "metric": sensor.metric,
            "value": round(sensor.value, 4),
            "unit": sensor.unit,
            "event_time": self._time(),
            "quality": quality,
        }
        return "sensor", self._with_id(record)

    def _ticket(self) -> dict[str, Any]:
        rng = self.rng
        self.tickets += 1
        customer, region = rng.choice(self.customers)
        revenue = Decimal(str(round(rng.lognormvariate(4.5, 1.0), 2))).quantize(Decimal("0.01"))
        record = {
            "ticket_id": f"T-{self.tickets:08d}-{rng.randrange(16**4):04x}",
            "customer_id": customer,
            "region": region,
            "event_time": self._time(),
            "revenue": f"{revenue:.2f}",
            "latency_ms": int(rng.lognormvariate(5.0, 0.8)),
            "status": rng.choices(_STATUSES, weights=(60, 30, 10))[0],
        }
        return self._with_id(record)

    def _time(self) -> str:
        return self.clock.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def _with_id(self, record: dict[str, Any]) -> dict[str, Any]:
        if self.rng.random() < self.event_id_ratio:
            return {"event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), **record}
        return record


@dataclass
class _OpenFile:
    path: Path
    handle: io.TextIOWrapper
    records: int = 0


@dataclass
class SanWriter:
    """Appends records to the SAN files, rotating and compressing as configured."""

    directory: Path
    formats: tuple[Format, ...] = ("jsonl", "csv")
    rotate_every: int = 0
    gzip_rotated: bool = False
    bom: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311
    rotations: int = 0
    _files: dict[tuple[Kind, Format], _OpenFile] = field(default_factory=dict)
    _sequence: int = 0

    def write(self, kind: Kind, record: dict[str, Any]) -> Path:
        fmt = self.formats[self.rng.randrange(len(self.formats))]
        current = self._files.get((kind, fmt)) or self._open(kind, fmt)
        if fmt == "jsonl":
            current.handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        else:
            columns = SENSOR_COLUMNS if kind == "sensor" else TICKET_COLUMNS
            row = [str(record.get(column, "")) for column in columns]
            csv.writer(current.handle, lineterminator="\n").writerow(row)
        current.records += 1
        if self.rotate_every and current.records >= self.rotate_every:
            self._rotate(kind, fmt)
        return current.path

    def _open(self, kind: Kind, fmt: Format) -> _OpenFile:
        folder, stem = _DIRS[kind]
        path = self.directory / folder / f"{stem}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a", encoding="utf-8", newline="")
        if fmt == "csv" and handle.tell() == 0:
            if self.bom:
                handle.write("\ufeff")
            columns = SENSOR_COLUMNS if kind == "sensor" else TICKET_COLUMNS
            handle.write(",".join(columns) + "\n")
        opened = _OpenFile(path, handle)
        self._files[(kind, fmt)] = opened
        return opened

    def _rotate(self, kind: Kind, fmt: Format) -> None:
        current = self._files.pop((kind, fmt))
        current.handle.close()
        self._sequence += 1
        self.rotations += 1
        rotated = current.path.with_name(f"{current.path.stem}-{self._sequence:05d}.{fmt}")
        current.path.rename(rotated)
        if self.gzip_rotated:
            temporary = rotated.with_name(f".{rotated.name}.gz.tmp")
            with rotated.open("rb") as source, gzip.open(temporary, "wb") as target:
                shutil.copyfileobj(source, target)
            temporary.rename(rotated.with_name(rotated.name + ".gz"))
            rotated.unlink()

    def flush(self) -> None:
        for current in self._files.values():
            current.handle.flush()

    def close(self) -> None:
        for current in self._files.values():
            current.handle.close()
        self._files.clear()


@dataclass
class GenerateOptions:
    directory: Path
    rate: float = 200.0
    count: int | None = None
    duration_s: float | None = None
    seed: int = 1
    formats: tuple[Format, ...] = ("jsonl", "csv")
    rotate_every: int = 0
    gzip_rotated: bool = False
    bom: bool = False
    ticket_ratio: float = 0.2
    event_id_ratio: float = 1.0
    start: datetime | None = None


def records(options: GenerateOptions) -> Iterator[tuple[Kind, dict[str, Any]]]:
    """The records of a run, without writing (what a test expects to find)."""
    factory = RecordFactory(
        seed=options.seed,
        ticket_ratio=options.ticket_ratio,
        start=options.start,
        event_id_ratio=options.event_id_ratio,
    )
    produced = 0
    while options.count is None or produced < options.count:
        yield factory.next()
        produced += 1


def generate(
    options: GenerateOptions,
    *,
    stop: threading.Event | None = None,
    on_record: Callable[[Kind, dict[str, Any], Path], None] | None = None,
) -> int:
    """Write records at ``rate`` per second (0: as fast as possible) until count/duration/stop."""
    if options.count is None and options.duration_s is None and stop is None:
        raise ValueError("give a count, a duration or a stop event")
    writer = SanWriter(
        options.directory,
        formats=options.formats,
        rotate_every=options.rotate_every,
        gzip_rotated=options.gzip_rotated,
        bom=options.bom,
        rng=random.Random(options.seed + 1),  # noqa: S311 - which file gets a record
    )
    started = time.monotonic()
    written = 0
    source = records(options)
    try:
        while True:
            elapsed = time.monotonic() - started
            if options.duration_s is not None and elapsed >= options.duration_s:
                break
            if stop is not None and stop.is_set():
                break
            due = (
                (options.count or 1 << 62)
                if options.rate <= 0
                else min(int(elapsed * options.rate) + 1, options.count or 1 << 62)
            )
            if written < due:
                batch_end = min(due, written + 10_000)
                for kind, record in source:
                    path = writer.write(kind, record)
                    if on_record is not None:
                        on_record(kind, record, path)
                    written += 1
                    if written >= batch_end:
                        break
                else:
                    break  # the count is reached
                writer.flush()
            if options.count is not None and written >= options.count:
                break
            if options.rate > 0:
                time.sleep(max(0.001, min(0.01, written / options.rate - elapsed)))
    finally:
        writer.close()
    return written


def parse_start(value: str | None) -> datetime | None:
    if value is None:
        return None
    if value == "now":
        return datetime.now(UTC)
    return datetime.fromisoformat(value).astimezone(UTC)


def describe(options: GenerateOptions, written: int) -> str:
    return (
        f"wrote {written} records under {options.directory} "
        f"(seed {options.seed}, formats {','.join(options.formats)}, pid {os.getpid()})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m indutech_devtools.iot``: write SAN files (deterministic under ``--seed``)."""
    parser = argparse.ArgumentParser(
        prog="python -m indutech_devtools.iot",
        description="Write realistic sensor readings and client tickets as SAN files for "
        "iot-ingest (deterministic under --seed).",
    )
    parser.add_argument("--dir", type=Path, required=True, help="the SAN directory to write")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="records/s (0: as fast as possible)"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds to run")
    parser.add_argument("--count", type=int, default=None, help="records to write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--formats", default="jsonl,csv", help="comma-separated: jsonl, csv (default both)"
    )
    parser.add_argument("--rotate-every", type=int, default=0, help="records per file (0: never)")
    parser.add_argument("--gzip", action="store_true", help="gzip rotated files")
    parser.add_argument("--bom", action="store_true", help="start CSV files with a UTF-8 BOM")
    parser.add_argument("--ticket-ratio", type=float, default=0.2)
    parser.add_argument(
        "--event-id-ratio", type=float, default=1.0, help="share of records carrying an event_id"
    )
    parser.add_argument("--start", default=None, help="first event time (ISO 8601 or 'now')")
    args = parser.parse_args(argv)
    formats = tuple(part.strip() for part in args.formats.split(",") if part.strip())
    if not formats or any(fmt not in ("jsonl", "csv") for fmt in formats):
        parser.error(f"--formats must list jsonl and/or csv, not {args.formats!r}")
    if args.count is None and args.duration is None:
        parser.error("give --count or --duration")
    options = GenerateOptions(
        directory=args.dir,
        rate=args.rate,
        count=args.count,
        duration_s=args.duration,
        seed=args.seed,
        formats=formats,
        rotate_every=args.rotate_every,
        gzip_rotated=args.gzip,
        bom=args.bom,
        ticket_ratio=args.ticket_ratio,
        event_id_ratio=args.event_id_ratio,
        start=parse_start(args.start),
    )
    written = generate(options)
    print(describe(options, written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
