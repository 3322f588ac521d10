"""Parsing and validation of SAN lines: JSON Lines, CSV (delimiter, BOM), derived ids."""

from __future__ import annotations

import json

import pytest

from indutech_common.schemas import derive_event_id
from indutech_common.tailing import FileState, Line
from indutech_common.tailing.paths import glob_regex
from indutech_iot_ingest.config import DEFAULT_ROUTES, CsvOptions, Route
from indutech_iot_ingest.sources import LineParser, RejectedLine

STATE = FileState(base="f" * 40, fingerprint_len=64, path="/san/x")
TICKET = {
    "ticket_id": "T-1",
    "customer_id": "CUST-1",
    "region": "emea-west",
    "event_time": "2026-01-01T01:00:00+01:00",
    "revenue": "12.50",
    "latency_ms": 120,
    "status": "open",
}


def line(data: bytes, offset: int = 100, header: bytes | None = None) -> Line:
    return Line(
        spec="r", state=STATE, offset=offset, end=offset + len(data) + 1, data=data, header=header
    )


def parser(fmt: str = "jsonl", record: str = "client_ticket", **csv: object) -> LineParser:
    route = Route(
        name="r",
        patterns=("*",),
        record=record,
        format=fmt,
        csv=CsvOptions(**csv),
    )
    return LineParser(route, "topic")


class TestJsonLines:
    def test_valid_ticket_keeps_revenue_as_text_and_derives_its_id(self) -> None:
        """No event_id in the file: the id comes from (fingerprint, offset), the same on replay."""
        parsed = parser().parse(line(json.dumps(TICKET).encode()))
        assert parsed is not None
        value = json.loads(parsed.value)
        assert value["revenue"] == "12.50"
        assert value["event_time"] == "2026-01-01T00:00:00Z"
        assert parsed.event_id == derive_event_id(STATE.fingerprint, 100)
        assert parsed.key == b"CUST-1"

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b'{"ticket_id": ', "invalid_json"),
            (b"[1, 2]", "not_an_object"),
            (json.dumps({**TICKET, "revenue": 12.5}).encode(), "schema_violation"),
            (json.dumps({**TICKET, "latency_ms": -1}).encode(), "schema_violation"),
            (
                json.dumps({k: v for k, v in TICKET.items() if k != "region"}).encode(),
                "schema_violation",
            ),
            (b"\xff\xfe\x00\x81", "invalid_encoding"),
        ],
    )
    def test_bad_lines_are_rejected_with_a_reason(self, data: bytes, reason: str) -> None:
        """Each kind of bad line is refused with a stable reason."""
        with pytest.raises(RejectedLine) as info:
            parser().parse(line(data))
        assert info.value.reason == reason

    def test_blank_line_is_skipped(self) -> None:
        """A blank line is neither a record nor an error."""
        assert parser().parse(line(b"  \r")) is None


class TestCsv:
    def test_bom_header_and_semicolons(self) -> None:
        """A BOM before the header and a ';' delimiter are read as configured."""
        header = "\ufeffsensor_id;site;metric;value;unit;event_time".encode()
        parsed = parser("csv", "sensor_reading", delimiter=";").parse(
            line(b"s-1;lyon;power;12.5;kW;2026-01-01T00:00:00Z\r", header=header)
        )
        assert parsed is not None
        value = json.loads(parsed.value)
        assert (value["sensor_id"], value["value"], value["quality"]) == ("s-1", 12.5, "good")

    @pytest.mark.parametrize("delimiter", [";", ",", "\t", "|"])
    def test_the_delimiter_is_found_from_the_header(self, delimiter: str) -> None:
        """By default ('auto') each file's header decides: ; , tab or |."""
        columns = ("sensor_id", "site", "metric", "value", "unit", "event_time")
        row = ("s-1", "lyon", "power", "12.5", "kW", "2026-01-01T00:00:00Z")
        parsed = parser("csv", "sensor_reading").parse(
            line(delimiter.join(row).encode(), header=delimiter.join(columns).encode())
        )
        assert parsed is not None
        assert json.loads(parsed.value)["value"] == 12.5

    def test_an_explicit_delimiter_is_not_guessed(self) -> None:
        """delimiter=',' with a ';' header: one column named after the whole header."""
        with pytest.raises(RejectedLine) as info:
            parser("csv", "sensor_reading", delimiter=",").parse(
                line(b"s-1;lyon;power;1;kW;2026-01-01T00:00:00Z", header=b"sensor_id;site;metric")
            )
        assert info.value.reason == "schema_violation"
        assert "sensor_id: Field required" in info.value.error

    def test_wrong_number_of_fields(self) -> None:
        """A row with too few fields is a csv_error naming the columns."""
        with pytest.raises(RejectedLine) as info:
            parser("csv", "sensor_reading").parse(
                line(b"s-1,lyon", header=b"sensor_id,site,metric")
            )
        assert info.value.reason == "csv_error"


class TestRouteSettings:
    @pytest.mark.parametrize(
        "name",
        [
            "line-a.jsonl",
            "line-a.jsonl.gz",
            "line-a.jsonl.1",
            "line-a.jsonl.1.gz",
            "line-a.jsonl.12.gz",
            "line-a.jsonl-20261204",
            "line-a.jsonl-20261204.gz",
            "line-a.jsonl.2026-12-04",
            "readings-00001.jsonl.gz",
        ],
    )
    def test_default_globs_match_the_usual_rotated_names(self, name: str) -> None:
        """The README's own rotation example (.1 → .1.gz) and logrotate's dateext names."""
        matches = glob_regex(DEFAULT_ROUTES[0].patterns).match
        assert matches(f"sensors/{name}")
        assert matches(f"sensors/line/{name}")
        assert not matches(f"tickets/{name}")

    @pytest.mark.parametrize(
        "name", ["line-a.jsonl.1.gz.tmp", "line-a.jsonl.bak", "line-a.jsonl.1.zst", "line-a.csv.1"]
    )
    def test_default_globs_leave_temporary_and_foreign_names(self, name: str) -> None:
        """A rotated name ends with a digit or .gz: a half-written temporary is not read."""
        assert not glob_regex(DEFAULT_ROUTES[0].patterns).match(f"sensors/{name}")

    def test_a_delimiter_of_two_characters_is_refused(self) -> None:
        """One character, or 'auto'."""
        with pytest.raises(ValueError, match="one character"):
            CsvOptions(delimiter=";;")

    def test_utf16_is_refused(self) -> None:
        """Lines are split on newline bytes, so a non ASCII-compatible encoding is refused."""
        with pytest.raises(ValueError, match="ASCII-compatible"):
            Route(
                name="r", patterns=("*",), record="client_ticket", format="jsonl", encoding="utf-16"
            )
