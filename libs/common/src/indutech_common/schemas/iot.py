"""IoT records as they appear on the SAN and on the ``iot.*`` topics.

Timestamps must carry an offset and are stored in UTC with microseconds
(serialised by pydantic-core itself: ``2026-01-01T00:00:00.005000Z``, the fraction
left out when it is zero); revenue is a decimal with two places and is never a
float (on the wire it is a JSON string, so no reader can turn it into one).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

SCHEMA_VERSION = 1
# Fixed namespace: event ids derived from (file fingerprint, byte offset) are
# the same on every replay, on every machine.
EVENT_ID_NAMESPACE = uuid.UUID("6f1b6a52-3c1e-4f59-9d1e-2b7c7b1c9a10")


def derive_event_id(file_fingerprint: str, byte_offset: int) -> str:
    """A stable id for a line that has none: the same file content and offset give the same id."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{file_fingerprint}:{byte_offset}"))


def _to_utc(value: datetime) -> datetime:
    # Most timestamps arrive in UTC already: returning them as they are keeps the
    # per-record cost low (iot-ingest validates every line). A tzinfo equal to
    # UTC (pydantic-core's TzInfo(0), timezone.utc, …) compares equal to UTC.
    if value.tzinfo == UTC:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+01:00: pydantic passes only ValueError on as a
        # validation error; an OverflowError would stop the reader at this record.
        raise ValueError(
            "the time is out of range once converted to UTC (years 1 to 9999)"
        ) from None


# No Python serializer: pydantic-core writes a UTC datetime as ``…Z`` on its own,
# and a Python callable per record cost more than the rest of the serialisation.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Money = Annotated[
    Decimal,
    Field(max_digits=18, decimal_places=2),
    PlainSerializer(lambda v: f"{v:.2f}", return_type=str, when_used="json"),
]
NonEmpty = Annotated[str, Field(min_length=1, max_length=256)]


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class TicketStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    CLOSED = "closed"


# The record fields hold the enums' values as plain strings (equal to the members):
# pydantic-core checks a Literal natively, while an enum field costs a Python call
# per record to validate and another to serialise.
QualityValue = Literal["good", "uncertain", "bad"]
TicketStatusValue = Literal["open", "resolved", "closed"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    key_field: ClassVar[str]

    event_id: NonEmpty | None = None
    event_time: UtcDatetime
    schema_version: Literal[1] = 1

    def key(self) -> bytes:
        return str(getattr(self, self.key_field)).encode()

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class SensorReading(_Record):
    key_field: ClassVar[str] = "sensor_id"

    sensor_id: NonEmpty
    site: NonEmpty
    metric: NonEmpty
    value: float = Field(allow_inf_nan=False)
    unit: Annotated[str, Field(max_length=32)]
    quality: QualityValue = "good"


class ClientTicket(_Record):
    key_field: ClassVar[str] = "customer_id"

    ticket_id: NonEmpty
    customer_id: NonEmpty
    region: NonEmpty
    revenue: Money
    latency_ms: int = Field(ge=0)
    status: TicketStatusValue

    @field_validator("revenue", mode="before")
    @classmethod
    def _no_float(cls, value: object) -> object:
        # A float has already lost digits; CSV and our JSON carry revenue as text.
        if isinstance(value, float):
            raise ValueError(  # noqa: TRY004 - pydantic reports ValueError as a field error
                "revenue must be a decimal string or integer, never a float"
            )
        return value
