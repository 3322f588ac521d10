"""Record schemas: UTC microsecond timestamps, exact money, stable derived ids."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from indutech_common.schemas import ClientTicket, SensorReading, derive_event_id

TICKET = {
    "ticket_id": "T-1",
    "customer_id": "C-42",
    "region": "emea",
    "event_time": "2026-03-01T12:00:00.123456+01:00",
    "revenue": "1234567890.10",
    "latency_ms": 250,
    "status": "open",
}


class TestSensorReading:
    def test_event_time_normalised_to_utc(self) -> None:
        """An offset timestamp is stored in UTC with microseconds."""
        reading = SensorReading.model_validate_json(
            json.dumps(
                {
                    "sensor_id": "s1",
                    "site": "lyon",
                    "metric": "temperature",
                    "value": 21.5,
                    "unit": "C",
                    "event_time": "2026-03-01T12:00:00.000001+02:00",
                }
            )
        )
        payload = json.loads(reading.to_json_bytes())
        assert payload["event_time"] == "2026-03-01T10:00:00.000001Z"
        assert payload["quality"] == "good"
        assert reading.key() == b"s1"

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("event_time", "2026-03-01T12:00:00", "timezone"),
            ("value", "NaN", "finite"),
            ("quality", "excellent", "good"),
            ("sensor_id", "", "at least 1"),
            # before UTC's year 1: an OverflowError stopped the reader at this record
            ("event_time", "0001-01-01T00:00:00+01:00", "out of range once converted to UTC"),
        ],
    )
    def test_invalid_fields_are_named(self, field: str, value: object, message: str) -> None:
        """Each invalid field is reported by name with the reason."""
        record = {
            "sensor_id": "s1",
            "site": "lyon",
            "metric": "temperature",
            "value": 1.0,
            "unit": "C",
            "event_time": "2026-03-01T12:00:00Z",
            field: value,
        }
        with pytest.raises(ValidationError) as info:
            SensorReading.model_validate(record)
        assert info.value.errors()[0]["loc"] == (field,)
        assert message in str(info.value)

    def test_unknown_field_refused(self) -> None:
        with pytest.raises(ValidationError, match="extra"):
            SensorReading.model_validate({"bogus": 1})


class TestClientTicket:
    def test_revenue_stays_exact(self) -> None:
        """Revenue survives as a two-place decimal string on the wire."""
        ticket = ClientTicket.model_validate(TICKET)
        assert ticket.revenue == Decimal("1234567890.10")
        assert json.loads(ticket.to_json_bytes())["revenue"] == "1234567890.10"

    def test_float_revenue_refused(self) -> None:
        with pytest.raises(ValidationError, match="never a float"):
            ClientTicket.model_validate({**TICKET, "revenue": 12.5})

    def test_three_places_refused(self) -> None:
        with pytest.raises(ValidationError, match="decimal places"):
            ClientTicket.model_validate({**TICKET, "revenue": "1.005"})

    def test_negative_latency_refused(self) -> None:
        with pytest.raises(ValidationError, match="greater than or equal to 0"):
            ClientTicket.model_validate({**TICKET, "latency_ms": -1})


def test_derived_event_id_is_stable_and_distinct() -> None:
    """The same (fingerprint, offset) gives the same id; another offset another id."""
    assert derive_event_id("abc", 10) == derive_event_id("abc", 10)
    assert derive_event_id("abc", 10) != derive_event_id("abc", 11)
    assert derive_event_id("abc", 10) != derive_event_id("abd", 10)
