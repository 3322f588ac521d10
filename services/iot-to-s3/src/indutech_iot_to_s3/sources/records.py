"""Decoding the records of the iot.* topics: validated against their model, made columnar.

Each record is validated by pydantic-core against its model (the model is the
contract: the same rules as every other reader and writer of the topic). The
valid records of a poll are then turned straight into Arrow columns with the
model's explicit schema (``indutech_common.schemas.arrow``): timestamps are
UTC microseconds, revenue is ``decimal128(18, 2)``, enums are their string
value. The columns hold the canonical values, so the files never depend on how
a producer happened to format a value, and no per-record JSON is re-encoded.

A record whose value fits its model but not its Arrow column (an integer beyond
int64) is refused with reason ``out_of_range`` instead of failing the whole
batch, so one bad record never blocks a partition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationError

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_common.schemas.arrow import arrow_schema
from indutech_iot_to_s3.batches import OFFSET_COLUMN, batch_schema
from indutech_iot_to_s3.sources.batch import BatchRules, UnsupportedModelError

MAX_ERROR_CHARS = 1000
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


@dataclass(frozen=True)
class Rejected:
    """A record of a batch that goes to the dead letters."""

    index: int  # position in the decoded batch
    reason: str
    detail: str


@dataclass
class DecodedBatch:
    """The valid records of a batch as one Arrow batch (model columns + ``kafka_offset``,
    in input order), and the refused ones in input order."""

    valid: pa.RecordBatch | None
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def valid_count(self) -> int:
        return 0 if self.valid is None else self.valid.num_rows


class RecordCodec:
    """Maps each topic to its record model and its Arrow columns."""

    def __init__(self, *, sensor_topic: str, ticket_topic: str) -> None:
        self.models: dict[str, type[SensorReading] | type[ClientTicket]] = {
            sensor_topic: SensorReading,
            ticket_topic: ClientTicket,
        }
        # pydantic-core directly: model_validate_json adds a Python layer per call
        self._validators = {
            topic: model.__pydantic_validator__ for topic, model in self.models.items()
        }
        self._schemas = {topic: arrow_schema(model) for topic, model in self.models.items()}
        self._batch_schemas = {
            topic: batch_schema(schema) for topic, schema in self._schemas.items()
        }
        self._rules: dict[str, BatchRules] = {}
        for topic, model in self.models.items():
            with contextlib.suppress(UnsupportedModelError):  # all its records: the model path
                self._rules[topic] = BatchRules.from_model(model)

    def batch_path(self, topic: str) -> bool:
        """Whether ``topic``'s records go through the batch path (else all through the model)."""
        return topic in self._rules

    def model_for(self, topic: str) -> type[BaseModel]:
        return self.models[topic]

    def batch_schema(self, topic: str) -> pa.Schema:
        """The schema of the buffered batches of ``topic``: model columns + ``kafka_offset``."""
        return self._batch_schemas[topic]

    def decode_batch(
        self, topic: str, offsets: Sequence[int], values: Sequence[bytes | None]
    ) -> DecodedBatch:
        """Decode a poll: the batch path takes what it can prove, the model the rest; the
        valid records become one Arrow batch in input (offset) order."""
        rules = self._rules.get(topic)
        if rules is None:
            return self.decode_records(topic, offsets, values)
        fast = rules.decode(values)
        if not fast.left:  # the usual poll: every record taken by the batch path
            return DecodedBatch(_with_offsets(fast.batch, offsets, fast.taken, topic, self))
        slow = self.decode_records(
            topic, [offsets[i] for i in fast.left], [values[i] for i in fast.left]
        )
        rejected = [Rejected(fast.left[r.index], r.reason, r.detail) for r in slow.rejected]
        pieces = [
            b
            for b in (_with_offsets(fast.batch, offsets, fast.taken, topic, self), slow.valid)
            if b is not None
        ]
        if not pieces:
            return DecodedBatch(None, rejected)
        merged = pa.Table.from_batches(pieces).combine_chunks()
        order = pc.sort_indices(merged.column(OFFSET_COLUMN))
        return DecodedBatch(merged.take(order).to_batches()[0], rejected)

    def decode_records(
        self, topic: str, offsets: Sequence[int], values: Sequence[bytes | None]
    ) -> DecodedBatch:
        """The per-record path: every value validated by the model (pydantic-core)."""
        validate = self._validators[topic].validate_json
        rows: list[dict[str, Any]] = []
        kept: list[int] = []
        rejected: list[Rejected] = []
        for index, value in enumerate(values):
            if not value:
                rejected.append(Rejected(index, "empty_value", "the record has no value"))
                continue
            try:
                record = validate(value)
            except ValidationError as exc:
                reason = "invalid_json" if _is_json_error(exc) else "schema_validation"
                rejected.append(Rejected(index, reason, str(exc)[:MAX_ERROR_CHARS]))
                continue
            rows.append(record.__dict__)
            kept.append(offsets[index])
        schema = self._batch_schemas[topic]
        try:
            valid = to_batch(schema, rows, kept)
        except _ARROW_ERRORS:
            valid, unfit = _to_batch_row_by_row(schema, rows, kept)
            positions = {offset: index for index, offset in enumerate(offsets)}
            rejected += [Rejected(positions[offset], "out_of_range", why) for offset, why in unfit]
            rejected.sort(key=lambda r: r.index)
        return DecodedBatch(valid, rejected)


def _with_offsets(
    batch: pa.RecordBatch | None,
    offsets: Sequence[int],
    taken: list[int],
    topic: str,
    codec: RecordCodec,
) -> pa.RecordBatch | None:
    """The batch path's rows with their ``kafka_offset`` column (the buffered batch's schema)."""
    if batch is None:
        return None
    column = pa.array(
        [offsets[i] for i in taken] if len(taken) < len(offsets) else offsets, pa.int64()
    )
    return pa.RecordBatch.from_arrays([*batch.columns, column], schema=codec.batch_schema(topic))


def to_batch(
    schema: pa.Schema, rows: list[dict[str, Any]], offsets: list[int]
) -> pa.RecordBatch | None:
    """Columns of validated records (their ``__dict__``) plus their offsets; None when empty.

    Raises an Arrow error (or OverflowError) when a value does not fit its column.
    """
    if not rows:
        return None
    fields = [(f.name, f.type) for f in schema if f.name != OFFSET_COLUMN]
    # the name is looked up once per column: a Field's .name builds a new str per call
    columns = [pa.array([row[name] for row in rows], type=type_) for name, type_ in fields]
    columns.append(pa.array(offsets, type=pa.int64()))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _to_batch_row_by_row(
    schema: pa.Schema, rows: list[dict[str, Any]], offsets: list[int]
) -> tuple[pa.RecordBatch | None, list[tuple[int, str]]]:
    """The slow path after a conversion error: find the rows that do not fit."""
    fit_rows: list[dict[str, Any]] = []
    fit_offsets: list[int] = []
    unfit: list[tuple[int, str]] = []
    for row, offset in zip(rows, offsets, strict=True):
        try:
            to_batch(schema, [row], [offset])
        except _ARROW_ERRORS as exc:
            unfit.append((offset, f"a value does not fit its column: {exc}"[:MAX_ERROR_CHARS]))
        else:
            fit_rows.append(row)
            fit_offsets.append(offset)
    return to_batch(schema, fit_rows, fit_offsets), unfit


def _is_json_error(exc: ValidationError) -> bool:
    return any(error["type"] == "json_invalid" for error in exc.errors())
