"""Decoding the records of the iot.* topics against their contracts (``indutech_common.schemas``).

The models are the contract shared with iot-ingest and iot-to-s3: the same
validation as every other reader, so what the lake holds and what is aggregated
agree. A record that fails is refused with a stable reason (for the dead-letter
header and the metric) and a detail.
"""

from __future__ import annotations

from pydantic import ValidationError

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_iot_aggregator.errors import InvalidRecordError
from indutech_iot_aggregator.windows import US_PER_S, to_us

MAX_ERROR_CHARS = 1000


class RecordDecoder:
    """Maps each topic to its record model; refuses bad records and broken clocks."""

    def __init__(self, *, sensor_topic: str, ticket_topic: str, max_future_s: float) -> None:
        self.sensor_topic = sensor_topic
        self.ticket_topic = ticket_topic
        self._max_future_us = round(max_future_s * US_PER_S)
        # pydantic-core directly: model_validate_json adds a Python layer per call
        self._readings = SensorReading.__pydantic_validator__
        self._tickets = ClientTicket.__pydantic_validator__

    def decode(
        self, topic: str, value: bytes | None, *, now_us: int
    ) -> tuple[SensorReading | ClientTicket, int]:
        """The record and its event time in µs, or InvalidRecordError."""
        if not value:
            raise InvalidRecordError("empty_value", "the record has no value")
        validator = self._readings if topic == self.sensor_topic else self._tickets
        try:
            record: SensorReading | ClientTicket = validator.validate_json(value)
        except ValidationError as exc:
            invalid_json = any(error["type"] == "json_invalid" for error in exc.errors())
            reason = "invalid_json" if invalid_json else "schema_validation"
            raise InvalidRecordError(reason, str(exc)[:MAX_ERROR_CHARS]) from None
        event_us = to_us(record.event_time)
        if event_us > now_us + self._max_future_us:
            raise InvalidRecordError(
                "event_time_in_future",
                f"event_time {record.event_time.isoformat()} is more than "
                f"{self._max_future_us / US_PER_S:.0f} s ahead of the clock: fix the "
                "producer's clock, then replay the record from the dead-letter topic",
            )
        return record, event_us
