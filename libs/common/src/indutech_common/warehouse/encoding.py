"""Arrow record batches as PostgreSQL binary COPY data, typed by the target table.

Binary COPY carries no type information: the server reads each field with the receive
function of the target column's type, so the bytes must be exactly that type's binary form
(an ``int8`` sent to an ``integer`` column is an error, not a cast). The target's column
types therefore decide the encoding: each Arrow column is first cast, with Arrow's *safe*
casts (an integer out of range, a decimal or timestamp losing digits fails instead of
changing), to the Arrow type whose pgpq encoding is that PostgreSQL type's binary form, then
pgpq (Rust) encodes the whole batch in one call.

The pairs (``target_arrow_type``): bool, int2/4/8, float4/8, numeric (decimal128, or an
integer), text-like types (text, varchar, bpchar, name, json, xml, citext and enums, whose
binary form is their text), jsonb (text with jsonb's version byte), bytea, uuid (16 bytes,
from its text or from 16 raw bytes), date, timestamp and timestamptz (µs since 2000-01-01
UTC; naive Arrow timestamps go to timestamptz as UTC), time, interval (from a duration).
Anything else (arrays, money, ranges, …) is refused naming the column: load it as text
into a staging table and cast it on the server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pgpq
import pyarrow as pa
import pyarrow.compute as pc
from pgpq import encoders as pgpq_encoders
from pgpq import schema as pgpq_schema

from indutech_common.errors import IndutechError

if TYPE_CHECKING:
    from pgpq._pgpq import EncoderBuilder  # a type alias the stub declares, nothing at runtime

DECIMAL128_MAX_PRECISION = 38
# A numeric typmod is ((precision << 16) | scale) + 4 (VARHDRSZ).
_VARHDRSZ = 4
_UUID_PATTERN = (
    r"^\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?$"
)
_UUID_BYTES = 16


class ArrowCopyError(IndutechError):
    """A batch cannot be loaded into the target table as it is; the message names the
    column, its Arrow type, the target type and what to do."""


@dataclass(frozen=True)
class TargetColumn:
    """A column of the target table as the encoder needs it (domains resolved to their
    base type)."""

    name: str
    type_name: str
    """``pg_type.typname`` of the (base) type: int4, numeric, timestamptz, …"""
    type_kind: str = "b"
    """``pg_type.typtype``: 'b' base, 'e' enum, …"""
    typmod: int = -1
    shown: str = ""
    """The type as ``format_type`` spells it, for messages."""

    @property
    def display(self) -> str:
        return self.shown or self.type_name


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _is_binary(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_fixed_size_binary(t)
    )


_TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name", "json", "xml", "citext"})
_FIXED: dict[str, tuple[pa.DataType, Callable[[pa.DataType], bool]]] = {
    "bool": (pa.bool_(), pa.types.is_boolean),
    "int2": (pa.int16(), pa.types.is_integer),
    "int4": (pa.int32(), pa.types.is_integer),
    "int8": (pa.int64(), pa.types.is_integer),
    # real from float32 only: a float64 would be rounded, silently, by any route.
    "float4": (pa.float32(), lambda t: pa.types.is_float16(t) or pa.types.is_float32(t)),
    "float8": (pa.float64(), pa.types.is_floating),
    "date": (pa.date32(), pa.types.is_date),
    "time": (pa.time64("us"), pa.types.is_time),
    "timestamp": (pa.timestamp("us"), pa.types.is_timestamp),
    "timestamptz": (pa.timestamp("us", tz="UTC"), pa.types.is_timestamp),
    "interval": (pa.duration("us"), pa.types.is_duration),
}


def _numeric_type(source: pa.DataType, target: TargetColumn) -> pa.DataType | None:
    if target.typmod >= _VARHDRSZ:
        precision = ((target.typmod - _VARHDRSZ) >> 16) & 0xFFFF
        scale = (target.typmod - _VARHDRSZ) & 0xFFFF
        if precision <= DECIMAL128_MAX_PRECISION and (
            pa.types.is_decimal(source) or pa.types.is_integer(source)
        ):
            # numeric(p,s) would round extra digits on the server: the safe cast refuses.
            return pa.decimal128(precision, scale)
    if pa.types.is_decimal(source):
        if source.precision > DECIMAL128_MAX_PRECISION:
            return None
        return pa.decimal128(source.precision, source.scale)
    if pa.types.is_integer(source):
        return pa.decimal128(20, 0)  # every int64 and uint64
    return None


def target_arrow_type(source: pa.DataType, target: TargetColumn) -> pa.DataType:
    """The Arrow type whose pgpq encoding is ``target``'s binary form, for a column of
    ``source`` type; ``ArrowCopyError`` when the pair is not one this loader takes."""
    if pa.types.is_dictionary(source):
        source = source.value_type
    wire: pa.DataType | None = None
    name = target.type_name
    if name == "numeric":
        wire = _numeric_type(source, target)
    elif name in _TEXT_TYPES or name == "jsonb" or target.type_kind == "e":
        wire = source if _is_string(source) else None  # pgpq writes each string type
    elif name == "uuid":
        if _is_string(source) or (
            pa.types.is_fixed_size_binary(source) and source.byte_width == _UUID_BYTES
        ):
            wire = pa.binary(_UUID_BYTES)
    elif name == "bytea":
        wire = source if _is_binary(source) else None  # raw bytes from each binary type
    elif name in _FIXED:
        wanted, accepts = _FIXED[name]
        wire = wanted if accepts(source) else None
    if wire is None:
        raise ArrowCopyError(
            f"column {target.name}: Arrow {source} does not load into {target.display} by "
            "binary COPY. Cast the column to a matching Arrow type first, or load it as text "
            "into a staging table and cast it on the server."
        )
    return wire


def _uuid_bytes(name: str, column: pa.Array) -> pa.Array:
    """UUID text as 16 bytes each: validated in Arrow, hex-decoded in one call."""
    if pa.types.is_fixed_size_binary(column.type):
        return column
    column = column.cast(pa.large_string())
    valid = pc.match_substring_regex(column, _UUID_PATTERN)
    if not pc.all(pc.or_kleene(valid, column.is_null())).as_py():
        bad = column.filter(pc.invert(pc.fill_null(valid, True)))[0].as_py()
        raise ArrowCopyError(f"column {name}: {bad[:60]!r} is not a UUID")
    digits = pc.replace_substring_regex(column, r"[-{}]", "")
    filled = pc.fill_null(digits, "0" * 32)
    # After the fill every value is 32 hex digits, contiguous in the data buffer.
    offsets, data = filled.buffers()[1:3]
    start = pa.Array.from_buffers(pa.int64(), 1, [None, offsets], offset=filled.offset)[0]
    if data is None:  # pragma: no cover - an empty array has no data buffer
        return pa.nulls(len(column), pa.binary(_UUID_BYTES))
    start_at = start.as_py()
    raw = bytes.fromhex(data.to_pybytes()[start_at : start_at + 32 * len(column)].decode())
    decoded = pa.Array.from_buffers(pa.binary(_UUID_BYTES), len(column), [None, pa.py_buffer(raw)])
    if column.null_count == 0:
        return decoded
    return pc.if_else(column.is_null(), pa.scalar(None, pa.binary(_UUID_BYTES)), decoded)


def _jsonb_builder(field: pa.Field) -> EncoderBuilder:
    """jsonb's binary form is its text after a version byte; pgpq writes it."""
    if pa.types.is_large_string(field.type):
        return pgpq_encoders.LargeStringEncoderBuilder.new_with_output(field, pgpq_schema.Jsonb())
    if pa.types.is_string_view(field.type):
        return pgpq_encoders.StringViewEncoderBuilder.new_with_output(field, pgpq_schema.Jsonb())
    return pgpq_encoders.StringEncoderBuilder.new_with_output(field, pgpq_schema.Jsonb())


class BatchEncoder:
    """Casts batches of one Arrow schema to a target table's types and encodes them as
    binary COPY data: ``header()``, ``encode(batch)`` per batch, ``trailer()``.

    ``encode`` is pure CPU work on its own objects, so the loader runs it in a thread
    while the previous batch is on the wire; one encoder is used by one thread at a time.
    """

    def __init__(self, schema: pa.Schema, targets: list[TargetColumn]) -> None:
        if len(targets) != len(schema):  # pragma: no cover - the loader matches them by name
            raise ArrowCopyError("the batch and the target columns differ in number")
        self.source_schema = schema
        self.targets = targets
        self.wire_schema = pa.schema(
            [
                pa.field(f.name, target_arrow_type(f.type, t), nullable=True)
                for f, t in zip(schema, targets, strict=True)
            ]
        )
        builders: dict[str, EncoderBuilder] = {}
        for field, target in zip(self.wire_schema, targets, strict=True):
            if target.type_name == "jsonb":
                builders[field.name] = _jsonb_builder(field)
            else:
                builders[field.name] = pgpq.ArrowToPostgresBinaryEncoder.infer_encoder(field)
        self._encoder = pgpq.ArrowToPostgresBinaryEncoder.new_with_encoders(
            self.wire_schema, builders
        )

    def header(self) -> bytes:
        return self._encoder.write_header()

    def trailer(self) -> bytes:
        return self._encoder.finish()

    def cast(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch in the wire types; ``ArrowCopyError`` naming the column and the value
        problem when a safe cast would change a value."""
        if batch.schema.names != self.source_schema.names:
            raise ArrowCopyError(
                f"a batch has columns {batch.schema.names}, the first had "
                f"{self.source_schema.names}: every batch of one copy needs the same columns"
            )
        arrays = []
        for given, field, target, first in zip(
            batch.columns, self.wire_schema, self.targets, self.source_schema, strict=True
        ):
            if given.type != first.type:
                target_arrow_type(given.type, target)  # the same pairs as the first batch's
            column = given.dictionary_decode() if pa.types.is_dictionary(given.type) else given
            try:
                if field.type == pa.binary(_UUID_BYTES):
                    arrays.append(_uuid_bytes(target.name, column))
                elif column.type == field.type:
                    arrays.append(column)
                else:
                    arrays.append(column.cast(field.type, safe=True))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ArrowCopyError(
                    f"column {target.name}: a value of Arrow {column.type} would change in "
                    f"{target.display} ({exc}); nothing was loaded from this copy."
                ) from None
        return pa.RecordBatch.from_arrays(arrays, schema=self.wire_schema)

    def encode(self, batch: pa.RecordBatch) -> bytes:
        return self._encoder.write_batch(self.cast(batch))
