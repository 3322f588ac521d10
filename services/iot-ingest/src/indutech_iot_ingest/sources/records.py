"""From a tailed line to a validated record: JSON Lines or CSV, then the schema.

A line without ``event_id`` gets one derived from the file fingerprint and its
byte offset (``derive_event_id``), so a replay yields the same id.
"""

from __future__ import annotations

import codecs
import csv
from datetime import datetime
from typing import NamedTuple

from pydantic import ValidationError

from indutech_common.schemas import ClientTicket, SensorReading, derive_event_id
from indutech_common.tailing import Line, LineKind, WatchSpec
from indutech_iot_ingest.config import IotIngestSettings, Route
from indutech_iot_ingest.errors import RejectedLine

_BOM = b"\xef\xbb\xbf"
_RECORD_TYPES: dict[str, type[SensorReading] | type[ClientTicket]] = {
    "sensor_reading": SensorReading,
    "client_ticket": ClientTicket,
}
_MAX_ERRORS_SHOWN = 3


class ParsedRecord(NamedTuple):
    """A validated record in its canonical JSON (a tuple: cheap to make per line)."""

    topic: str
    key: bytes
    value: bytes
    event_id: str
    event_time: datetime


def watch_specs(settings: IotIngestSettings) -> list[WatchSpec]:
    """One tailer watch per route (a CSV header is the file's first line)."""
    return [
        WatchSpec(
            name=route.name,
            patterns=route.patterns,
            header_lines=1 if route.format == "csv" and route.csv.header else 0,
        )
        for route in settings.routes
    ]


class LineParser:
    """Parses and validates the lines of one route."""

    def __init__(self, route: Route, topic: str) -> None:
        self.route = route
        self.topic = topic
        self._model = _RECORD_TYPES[route.record]
        self._key_field = self._model.key_field
        # pydantic-core directly: model_validate_json/model_dump_json add a Python layer per call
        self._validator = self._model.__pydantic_validator__
        self._serializer = self._model.__pydantic_serializer__
        # UTF-8 lines are validated as bytes (pydantic checks the encoding itself)
        self._utf8 = codecs.lookup(route.encoding).name == "utf-8"
        self._plain_json = self._utf8 and route.format == "jsonl"
        self._headers: dict[bytes, tuple[tuple[str, ...], str]] = {}
        self._default_delimiter = route.csv.delimiter_for(None)

    def parse(self, line: Line) -> ParsedRecord | None:
        """The record of a line, None for a blank line; raises RejectedLine for a bad one."""
        record: SensorReading | ClientTicket | None = None
        if self._plain_json and line.offset != 0:
            # the common case first, straight to pydantic-core: JSON allows the
            # trailing "\r" of a CRLF file, and what fails is handled below
            try:
                record = self._validator.validate_json(line.data)
            except ValidationError:
                record = None
        if record is None:
            record = self._parse_carefully(line)
            if record is None:
                return None
        event_id = record.event_id
        if event_id is None:
            event_id = derive_event_id(line.state.fingerprint, line.offset)
            record = record.model_copy(update={"event_id": event_id})
        # tuple.__new__ skips the generated Python __new__ of the named tuple
        parsed = (
            self.topic,
            getattr(record, self._key_field).encode(),
            self._serializer.to_json(record),
            event_id,
            record.event_time,
        )
        return tuple.__new__(ParsedRecord, parsed)

    def _parse_carefully(self, line: Line) -> SensorReading | ClientTicket | None:
        data = line.data
        if data.endswith(b"\r"):
            data = data[:-1]
        if line.offset == 0 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        if not data or data.isspace():
            return None
        if self.route.format == "jsonl":
            return self._from_json(data)
        return self._from_csv(data, line.header)

    def _from_json(self, data: bytes) -> SensorReading | ClientTicket:
        try:
            source = data if self._utf8 else data.decode(self.route.encoding)
            record: SensorReading | ClientTicket = self._validator.validate_json(source)
        except UnicodeDecodeError as exc:
            raise RejectedLine("invalid_encoding", str(exc)) from None
        except ValidationError as exc:
            if self._utf8:
                _check_utf8(data)
            kinds = {error["type"] for error in exc.errors()}
            if "json_invalid" in kinds:
                raise RejectedLine("invalid_json", _describe(exc)) from None
            if "model_type" in kinds:
                raise RejectedLine("not_an_object", _describe(exc)) from None
            raise RejectedLine("schema_violation", _describe(exc)) from None
        return record

    def _from_csv(self, data: bytes, header: bytes | None) -> SensorReading | ClientTicket:
        columns, delimiter = self._columns(header)
        try:
            text = data.decode(self.route.encoding)
        except UnicodeDecodeError as exc:
            raise RejectedLine("invalid_encoding", str(exc)) from None
        row = self._split(text, delimiter)
        if len(row) != len(columns):
            raise RejectedLine(
                "csv_error", f"expected {len(columns)} fields ({','.join(columns)}), got {len(row)}"
            )
        fields = {name: value for name, value in zip(columns, row, strict=True) if value != ""}
        try:
            record: SensorReading | ClientTicket = self._validator.validate_python(fields)
        except ValidationError as exc:
            raise RejectedLine("schema_violation", _describe(exc)) from None
        return record

    def _split(self, text: str, delimiter: str) -> list[str]:
        try:
            return next(csv.reader([text], delimiter=delimiter, quotechar=self.route.csv.quotechar))
        except (csv.Error, StopIteration) as exc:
            raise RejectedLine("csv_error", str(exc) or "empty row") from None

    def _columns(self, header: bytes | None) -> tuple[tuple[str, ...], str]:
        """The column names and the delimiter of a file, from its header (cached)."""
        if not self.route.csv.header:
            return self.route.csv.columns, self._default_delimiter
        if header is None:
            raise RejectedLine("csv_error", "the file has no header line")
        known = self._headers.get(header)
        if known is None:
            raw = header[len(_BOM) :] if header.startswith(_BOM) else header
            try:
                text = raw.rstrip(b"\r").decode(self.route.encoding)
            except UnicodeDecodeError as exc:
                raise RejectedLine("csv_error", f"undecodable header: {exc}") from None
            delimiter = self.route.csv.delimiter_for(text)
            known = (tuple(name.strip() for name in self._split(text, delimiter)), delimiter)
            if len(self._headers) > 64:  # noqa: PLR2004 - a small cache of distinct headers
                self._headers.clear()
            self._headers[header] = known
        return known

    @staticmethod
    def special(line: Line) -> RejectedLine | None:
        """The refusal carried by a tailer line that is not a plain line."""
        if line.kind is LineKind.TOO_LONG:
            return RejectedLine("line_too_long", f"line of {line.length} bytes exceeds the limit")
        if line.kind in (LineKind.TRUNCATED_GZIP, LineKind.CORRUPT_GZIP):
            return RejectedLine(str(line.kind), line.error or str(line.kind))
        return None


def _check_utf8(data: bytes) -> None:
    """Refuse undecodable bytes as such (pydantic would call them invalid JSON)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedLine("invalid_encoding", str(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in error["loc"]) or "(record)"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - _MAX_ERRORS_SHOWN
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
