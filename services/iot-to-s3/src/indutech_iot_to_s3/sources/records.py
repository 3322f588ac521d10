"""Decoding the records of the iot.* topics: validated against their model, made canonical.

The canonical form (the model's own JSON: UTC timestamps with microseconds and
a ``Z``, revenue as a two-place string) is what the Parquet encoder reads, so
the files never depend on how a producer happened to format a value.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ValidationError

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_iot_to_s3.sources.exceptions import InvalidRecordError

MAX_ERROR_CHARS = 1000


class RecordCodec:
    """Maps each topic to its record model."""

    def __init__(self, *, sensor_topic: str, ticket_topic: str) -> None:
        self.models: dict[str, type[SensorReading] | type[ClientTicket]] = {
            sensor_topic: SensorReading,
            ticket_topic: ClientTicket,
        }
        # pydantic-core directly, per topic: model_validate_json/model_dump_json add a
        # Python layer per call that costs as much as a third of the validation itself
        self._codecs = {
            topic: (model.__pydantic_validator__, model.__pydantic_serializer__)
            for topic, model in self.models.items()
        }

    def model_for(self, topic: str) -> type[BaseModel]:
        return self.models[topic]

    def decode(self, topic: str, value: bytes | None) -> tuple[bytes, datetime]:
        """The canonical JSON bytes and the event time, or InvalidRecordError."""
        if not value:
            raise InvalidRecordError("empty_value", "the record has no value")
        validator, serializer = self._codecs[topic]
        try:
            record: SensorReading | ClientTicket = validator.validate_json(value)
        except ValidationError as exc:
            detail = str(exc)[:MAX_ERROR_CHARS]
            reason = "invalid_json" if _is_json_error(exc) else "schema_validation"
            raise InvalidRecordError(reason, detail) from None
        return serializer.to_json(record), record.event_time


def _is_json_error(exc: ValidationError) -> bool:
    return any(error["type"] == "json_invalid" for error in exc.errors())
