"""Settings of iot-ingest (env prefix ``IOT_INGEST_``)."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from indutech_common.schemas import Topics
from indutech_common.settings import KafkaSettings, KeyPrefix, S3Settings, WorkerSettings

RecordKind = Literal["sensor_reading", "client_ticket"]
MAX_KAFKA_VALUE_BYTES = 900_000  # under the broker's 1 MB message limit, with headers
MIB = 1024 * 1024
CSV_DELIMITERS = (",", ";", "\t", "|")  # what "auto" chooses from, by the header


def _ascii_compatible(encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if "\n".encode(encoding) != b"\n":
        raise ValueError(
            f"encoding {encoding!r} does not write a newline as one byte; lines are split on "
            "b'\\n', so use an ASCII-compatible encoding (utf-8, latin-1, cp1252)"
        )
    return encoding


class CsvOptions(BaseModel):
    """How a CSV route's files are written. A leading UTF-8 BOM is always accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delimiter: str = Field(
        default="auto",
        min_length=1,
        max_length=4,
        description="one character, or 'auto': per file, the one of , ; tab | that splits its "
        "header into the most columns (',' on a tie, and without a header)",
    )
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    header: bool = Field(default=True, description="the first line names the columns")
    columns: tuple[str, ...] = Field(default=(), description="column names when header is false")

    @model_validator(mode="after")
    def _columns_known(self) -> Self:
        if not self.header and not self.columns:
            raise ValueError("a CSV route without a header needs its columns")
        if self.delimiter != "auto" and len(self.delimiter) != 1:
            raise ValueError(f"delimiter {self.delimiter!r} must be one character or 'auto'")
        return self

    def delimiter_for(self, header: str | None) -> str:
        """The delimiter of a file with this header line."""
        if self.delimiter != "auto":
            return self.delimiter
        if header is None:
            return ","
        counts = [(header.count(candidate), candidate) for candidate in CSV_DELIMITERS]
        best = max(count for count, _ in counts)
        return next(c for n, c in counts if n == best) if best else ","


class Route(BaseModel):
    """Files matching ``patterns`` (globs relative to ``san_dir``) go to one topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    patterns: tuple[str, ...] = Field(min_length=1)
    record: RecordKind
    format: Literal["jsonl", "csv"]
    topic: str | None = Field(default=None, description="default: the record kind's topic")
    encoding: str = "utf-8"
    csv: CsvOptions = CsvOptions()

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        return _ascii_compatible(value)

    @field_validator("patterns")
    @classmethod
    def _relative(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if pattern.startswith("/") or ".." in Path(pattern).parts:
                raise ValueError(f"pattern {pattern!r} must be relative to san_dir")
        return value


def rotated_patterns(directory: str, extension: str) -> tuple[str, ...]:
    """Globs for ``directory/**/*.extension``, compressed or not, and its usual rotated names.

    logrotate's numbered (``.1``, ``.1.gz``, ``.12``) and ``dateext`` (``-20261204``,
    ``-20261204.gz``) names, and Python's ``TimedRotatingFileHandler``
    (``.2026-12-04``). A rotated name must end with a digit or ``.gz``, so a
    writer's temporary file (``.1.gz.tmp``) is not read half-written. A renamed
    file keeps its fingerprint, so a rotation never reads a line twice.
    """
    base = f"{directory}/**/*.{extension}"
    names = (base, f"{base}.[0-9]", f"{base}.[0-9]*[0-9]", f"{base}-[0-9]*[0-9]")
    return tuple(pattern for name in names for pattern in (name, f"{name}.gz"))


DEFAULT_ROUTES = (
    Route(
        name="sensor-jsonl",
        patterns=rotated_patterns("sensors", "jsonl"),
        record="sensor_reading",
        format="jsonl",
    ),
    Route(
        name="sensor-csv",
        patterns=rotated_patterns("sensors", "csv"),
        record="sensor_reading",
        format="csv",
    ),
    Route(
        name="ticket-jsonl",
        patterns=rotated_patterns("tickets", "jsonl"),
        record="client_ticket",
        format="jsonl",
    ),
    Route(
        name="ticket-csv",
        patterns=rotated_patterns("tickets", "csv"),
        record="client_ticket",
        format="csv",
    ),
)


class IotIngestSettings(WorkerSettings):
    """Everything iot-ingest reads from its environment."""

    service_name: ClassVar[str] = "iot-ingest"
    model_config = SettingsConfigDict(env_prefix="IOT_INGEST_")

    kafka: KafkaSettings
    san_dir: Path = Field(description="the SAN mount to watch (must exist)")
    routes: tuple[Route, ...] = Field(
        default=DEFAULT_ROUTES, min_length=1, description="JSON list: glob patterns → topic"
    )
    sensor_topic: str = Field(default=Topics.SENSOR_READINGS, min_length=1)
    ticket_topic: str = Field(default=Topics.CLIENT_TICKETS, min_length=1)
    dead_letter_topic: str = Field(default=Topics.DEAD_LETTER, min_length=1)
    checkpoint_topic: str = Field(
        default=Topics.INGEST_CHECKPOINTS,
        min_length=1,
        description="compacted topic of file checkpoints (key = fingerprint)",
    )
    transactional_id: str = Field(
        default="iot-ingest-0",
        min_length=1,
        description="stable per instance (e.g. the StatefulSet pod name): "
        "a restart fences the old one",
    )
    poll_interval_s: float = Field(default=0.05, gt=0, le=5, description="file poll period")
    commit_interval_s: float = Field(
        default=0.1, gt=0, le=10, description="longest a transaction stays open"
    )
    max_batch_records: int = Field(
        default=5000, gt=0, description="records per transaction at most"
    )
    max_line_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        le=MAX_KAFKA_VALUE_BYTES,
        description="longer lines are dead-lettered",
    )
    dead_letter_keep_bytes: int = Field(
        default=64 * 1024,
        ge=64,
        description="bytes of an over-long line kept in its dead letter message (the whole "
        "line goes to the dead-letter store in S3)",
    )
    s3: S3Settings | None = Field(
        default=None,
        description="the dead-letter store (shared INDUTECH_S3__* block): over-long lines are "
        "kept whole in the lake bucket; unset, only their first dead_letter_keep_bytes are kept",
    )
    dead_letter_prefix: KeyPrefix = Field(
        default="dead-letter/iot-ingest/",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9!_.*'()/-]*/$",
        description="key prefix of the dead-letter store in the lake bucket; an object's key is "
        "{prefix}{file fingerprint}/{byte offset:020d}, the same on every replay",
    )
    dead_letter_max_object_bytes: int = Field(
        default=64 * MIB,
        ge=MIB,
        le=5 * 1024 * MIB,
        description="an over-long line beyond this is kept up to it (header object_truncated)",
    )
    last_line_settle_s: float = Field(
        default=120.0,
        gt=0,
        description="a file's last line without a newline is read as a line once the file has "
        "not changed for this long (twice NFS's default attribute cache time)",
    )
    fingerprint_bytes: int = Field(default=1024, ge=16, le=1 << 20)
    gzip_settle_s: float = Field(
        default=1.0, ge=0, description=".gz files are read once unchanged this long"
    )
    close_idle_s: float = Field(default=30.0, gt=0, description="idle files are closed after this")
    retry_backoff_s: float = Field(
        default=1.0, gt=0, description="pause after a failed transaction"
    )
    forget_after_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="the checkpoint of a file that no scan has found for this long is deleted "
        "(a tombstone): the compacted topic does not grow forever; such content coming back "
        "is read again",
    )

    @field_validator("san_dir")
    @classmethod
    def _san_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory (is the SAN mounted?)")
        return value

    @model_validator(mode="after")
    def _routes_consistent(self) -> Self:
        names = [route.name for route in self.routes]
        if len(names) != len(set(names)):
            raise ValueError(f"route names must be unique: {names}")
        topics = {self.topic_of(route) for route in self.routes}
        for special in (self.checkpoint_topic, self.dead_letter_topic):
            if special in topics:
                raise ValueError(f"topic {special} is both a record topic and a service topic")
        return self

    def topic_of(self, route: Route) -> str:
        if route.topic:
            return route.topic
        return self.sensor_topic if route.record == "sensor_reading" else self.ticket_topic
