"""The batch path: a whole poll's values parsed by Arrow's JSON reader in one call.

The record model stays the one definition. ``BatchRules.from_model`` derives from it
(its fields, their constraints, its config) the checks that prove, column by column,
that a row parsed by Arrow is what the model would have made of the record; a row that
any check cannot prove is handed back to the per-record path, which validates it with
the model itself (and gives the dead-letter reason and detail). So the batch path only
ever *accepts* records, and only those the model accepts with the same values; it never
refuses one. A model with a constraint, validator or config the derivation does not
know raises ``UnsupportedModelError``, and its records all take the per-record path.

What a row must show to be taken here (anything else goes to the model):

- the value is one JSON object on one line: it starts with ``{``, ends with ``}``, holds
  no newline, and the values joined by newlines parse into exactly one row each;
- no unknown or repeated key, every value of the JSON type of its column (Arrow's
  reader refuses the batch otherwise: the batch is halved until the culprits are alone);
- a required field, or one with a non-null default, is present and not null (Arrow
  cannot tell a missing key from a null);
- strings need no stripping (Arrow's trim leaves them as they are) and their length
  in characters is within the field's ``min_length``/``max_length``;
- a ``Literal`` is one of its values; a float is finite; an int is within ``ge``/``gt``/
  ``le``/``lt``;
- a decimal is a JSON string ``-?digits(.digits)?`` within ``max_digits`` and
  ``decimal_places`` (a JSON number goes to the model, which refuses floats);
- a timestamp is ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|±HH:MM)`` between the years 1000 and
  9998, converted to UTC microseconds.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, cast, get_args, get_origin

import annotated_types
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

from indutech_common.schemas.arrow import TIMESTAMP_TYPE, arrow_schema
from indutech_common.schemas.iot import UtcDatetime

# A chunk this small that Arrow refuses goes to the model record by record.
SMALLEST_CHUNK = 8
# Read the whole poll as one block (a poll is at most a few MB).
BLOCK_BYTES = 1 << 26
TIMESTAMP = (
    r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
# One day inside the years pydantic accepts (1..9999), so no offset takes it outside.
EARLIEST_US = -30610137600_000_000 + 86_400_000_000  # 1000-01-02T00:00:00Z
LATEST_US = 253370764800_000_000  # 9999-01-01T00:00:00Z
# Field validators that return every JSON string unchanged (they refuse other types):
# the batch path takes only strings for their fields, so they cannot change a row.
STRING_SAFE_VALIDATORS = frozenset({"_no_float"})
KNOWN_CONFIG = frozenset({"extra", "frozen", "str_strip_whitespace"})
_UTC_VALIDATORS = list(get_args(UtcDatetime)[1:])
_BOUNDS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)

Kind = Literal["str", "literal", "float", "int", "decimal", "datetime"]


class UnsupportedModelError(TypeError):
    """The model has a rule the batch path cannot prove; its records take the model path."""


@dataclass(frozen=True)
class FieldRule:
    name: str
    kind: Kind
    column_type: pa.DataType  # the lake's column type
    null_ok: bool  # JSON null (or no key) means None, the field's default
    min_length: int | None = None
    max_length: int | None = None
    literals: tuple[Any, ...] = ()
    bounds: tuple[tuple[str, Any], ...] = ()  # ("ge", 0), ...
    digits: int = 0
    places: int = 0

    @property
    def read_type(self) -> pa.DataType:
        """What the JSON reader parses: decimals and timestamps as their text."""
        return pa.string() if self.kind in ("decimal", "datetime") else self.column_type


@dataclass
class BatchResult:
    """Rows taken by the batch path (model columns, in input order, with their positions in
    the input) and the positions left to the per-record path (ascending)."""

    batch: pa.RecordBatch | None
    taken: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """The annotation without Optional and Annotated, its constraints, and whether None is
    allowed."""
    nullable = False
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise UnsupportedModelError(f"union {annotation!r}")
        annotation, nullable = members[0], True
    if get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        for item in extra:
            metadata += item.metadata if isinstance(item, FieldInfo) else [item]
    return annotation, metadata, nullable


def _rule(name: str, info: FieldInfo, column_type: pa.DataType) -> FieldRule:
    annotation, metadata, null_ok = _unwrap(info.annotation, list(info.metadata))
    if null_ok and info.default is not None:
        raise UnsupportedModelError(f"{name}: an Optional field must default to None")
    if get_origin(annotation) is Literal:
        if metadata:
            raise UnsupportedModelError(f"{name}: constraints on a Literal")
        return FieldRule(name, "literal", column_type, null_ok, literals=get_args(annotation))
    if annotation is AwareDatetime:
        if metadata != _UTC_VALIDATORS:
            raise UnsupportedModelError(f"{name}: a datetime other than UtcDatetime")
        return FieldRule(name, "datetime", column_type, null_ok)
    rule = FieldRule(name, "str", column_type, null_ok)
    if annotation is str:
        return _constrained(rule, metadata, (annotated_types.MinLen, annotated_types.MaxLen))
    if annotation is float:
        if any(getattr(item, "allow_inf_nan", None) is not False for item in metadata):
            raise UnsupportedModelError(f"{name}: {metadata!r}")
        return replace(rule, kind="float")
    if annotation is int:
        return _constrained(replace(rule, kind="int"), metadata, _BOUNDS)
    if annotation is Decimal and isinstance(column_type, pa.Decimal128Type):
        return _decimal(rule, metadata, column_type)
    raise UnsupportedModelError(f"{name}: {annotation!r}")


def _decimal(rule: FieldRule, metadata: list[Any], column_type: pa.Decimal128Type) -> FieldRule:
    for item in metadata:
        kind = type(item).__name__
        if kind == "_PydanticGeneralMetadata":
            if set(vars(item)) - {"max_digits", "decimal_places"}:
                raise UnsupportedModelError(f"{rule.name}: {item!r}")
        elif kind != "PlainSerializer":  # how it is written, not what is valid
            raise UnsupportedModelError(f"{rule.name}: {item!r}")
    # the column's precision and scale are the field's max_digits and decimal_places
    return replace(rule, kind="decimal", digits=column_type.precision, places=column_type.scale)


def _constrained(rule: FieldRule, metadata: list[Any], known: tuple[type, ...]) -> FieldRule:
    """``rule`` with the length or bound constraints in ``metadata`` (only ``known`` kinds)."""
    lengths: dict[str, int] = {}
    bounds: list[tuple[str, Any]] = []
    for item in metadata:
        if not isinstance(item, known):
            raise UnsupportedModelError(f"{rule.name}: {item!r}")
        if isinstance(item, annotated_types.MinLen):
            lengths["min_length"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            lengths["max_length"] = item.max_length
        else:
            kind = type(item).__name__.lower()
            bounds.append((kind, getattr(item, kind)))
    return replace(
        rule,
        min_length=lengths.get("min_length"),
        max_length=lengths.get("max_length"),
        bounds=tuple(bounds),
    )


class BatchRules:
    """The batch path of one record model (see the module's docstring)."""

    def __init__(self, rules: Sequence[FieldRule], *, extra_forbidden: bool) -> None:
        self.rules = tuple(rules)
        self.schema = pa.schema([pa.field(r.name, r.column_type) for r in self.rules])
        self._read = pj.ParseOptions(
            explicit_schema=pa.schema([pa.field(r.name, r.read_type) for r in self.rules]),
            unexpected_field_behavior="error" if extra_forbidden else "ignore",
        )
        self._options = pj.ReadOptions(use_threads=False, block_size=BLOCK_BYTES)

    @classmethod
    def from_model(cls, model: type[BaseModel]) -> BatchRules:
        """The checks of ``model``; ``UnsupportedModelError`` when one of its rules is unknown."""
        config = model.model_config
        unknown = set(config) - KNOWN_CONFIG
        if unknown:
            raise UnsupportedModelError(f"{model.__name__}: config {sorted(unknown)}")
        decorators = model.__pydantic_decorators__
        if decorators.model_validators or decorators.root_validators:
            raise UnsupportedModelError(f"{model.__name__}: model validators")
        for name, validator in decorators.field_validators.items():
            if name not in STRING_SAFE_VALIDATORS or validator.info.mode != "before":
                raise UnsupportedModelError(f"{model.__name__}: field validator {name}")
        # Serializers (revenue's) only change how a record is written, not what is valid.
        schema = arrow_schema(model)
        try:
            rules = [_rule(n, info, schema.field(n).type) for n, info in model.model_fields.items()]
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"{model.__name__}.{exc}") from None
        return cls(rules, extra_forbidden=config.get("extra") == "forbid")

    def decode(self, values: Sequence[bytes | None]) -> BatchResult:
        """Take what the batch path can prove; leave the rest to the model."""
        result = BatchResult(None)
        if not values:
            return result
        # One object per line, each line one value: checked with two C-level counts.
        joined = b"\n".join(cast("Sequence[bytes]", values)) if all(values) else b""
        if (
            joined.count(b"\n") == len(values) - 1
            and joined.count(b"}\n{") == len(values) - 1
            and joined[:1] == b"{"
            and joined[-1:] == b"}"
        ):
            candidates = list(range(len(values)))
        else:
            candidates = []
            for index, value in enumerate(values):
                if value and value[:1] == b"{" and value[-1:] == b"}" and b"\n" not in value:
                    candidates.append(index)
                else:
                    result.left.append(index)
            joined = b""
        pieces: list[pa.RecordBatch] = []
        self._chunk(values, candidates, joined, pieces, result)
        result.left.sort()
        if pieces:  # in input order: chunks are visited left to right
            result.batch = pa.concat_batches(pieces) if len(pieces) > 1 else pieces[0]
        return result

    def _chunk(
        self,
        values: Sequence[bytes | None],
        indices: list[int],
        joined: bytes,
        pieces: list[pa.RecordBatch],
        result: BatchResult,
    ) -> None:
        if not indices:
            return
        try:
            if not joined:
                joined = b"\n".join(values[i] or b"" for i in indices)
            table = pj.read_json(
                pa.BufferReader(joined), read_options=self._options, parse_options=self._read
            )
            batch, taken = self._check(table, len(indices))
        except (pa.ArrowException, ValueError):
            # Some record here is not for the batch path (a type the model coerces, bad
            # UTF-8, two objects in one value, an impossible date): halve until it is alone.
            if len(indices) <= SMALLEST_CHUNK:
                result.left.extend(indices)
                return
            middle = len(indices) // 2
            self._chunk(values, indices[:middle], b"", pieces, result)
            self._chunk(values, indices[middle:], b"", pieces, result)
            return
        flags = taken.to_pylist()
        kept = [i for i, ok in zip(indices, flags, strict=True) if ok]
        result.left.extend(i for i, ok in zip(indices, flags, strict=True) if not ok)
        if kept:
            pieces.append(batch.filter(taken) if len(kept) < len(indices) else batch)
            result.taken.extend(kept)

    def _check(self, table: pa.Table, values: int) -> tuple[pa.RecordBatch, pa.BooleanArray]:
        """The lake's columns of ``table`` and which rows the checks prove."""
        if table.num_rows != values:
            raise ValueError("a value held more than one JSON object")
        ok: pa.BooleanArray | None = None
        columns = []
        for rule in self.rules:
            column = table.column(rule.name).combine_chunks()
            column, row_ok = _column(rule, column)
            present = pc.is_valid(column)
            if rule.null_ok:
                row_ok = pc.or_kleene(pc.invert(present), row_ok)
            else:
                row_ok = pc.and_kleene(present, row_ok)
            row_ok = pc.fill_null(row_ok, False)
            ok = row_ok if ok is None else pc.and_(ok, row_ok)
            columns.append(column)
        assert ok is not None  # noqa: S101 - a model has fields
        return pa.RecordBatch.from_arrays(columns, schema=self.schema), ok


def _column(rule: FieldRule, column: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The column in its lake type, and the rows whose value the checks prove (null: unknown)."""
    if rule.kind == "str":
        # Arrow's whitespace is a superset of pydantic's (str_strip_whitespace): a value
        # Arrow's trim leaves alone, pydantic leaves alone (a unit test checks every code point).
        ok = pc.equal(pc.utf8_trim_whitespace(column), column)
        if rule.min_length is not None or rule.max_length is not None:
            length = pc.utf8_length(column)
            if rule.min_length is not None:
                ok = pc.and_(ok, pc.greater_equal(length, rule.min_length))
            if rule.max_length is not None:
                ok = pc.and_(ok, pc.less_equal(length, rule.max_length))
        return column, ok
    if rule.kind == "literal":
        return column, pc.is_in(column, value_set=pa.array(rule.literals, type=column.type))
    if rule.kind == "float":
        return column, pc.is_finite(column)
    if rule.kind == "int":
        ok = pc.is_valid(column)
        for name, bound in rule.bounds:
            compare = {"ge": pc.greater_equal, "gt": pc.greater, "le": pc.less_equal}.get(
                name, pc.less
            )
            ok = pc.and_(ok, compare(column, pa.scalar(bound)))
        return column, ok
    if rule.kind == "decimal":
        whole = rule.digits - rule.places
        pattern = f"^-?[0-9]{{1,{whole}}}(?:\\.[0-9]{{1,{rule.places}}})?$"
        if rule.places == 0:
            pattern = f"^-?[0-9]{{1,{whole}}}$"
        ok = pc.match_substring_regex(column, pattern)
        safe = pc.if_else(pc.fill_null(ok, False), column, pa.scalar("0"))
        safe = pc.if_else(pc.is_valid(column), safe, column)
        return pc.cast(safe, rule.column_type), ok
    # datetime
    ok = pc.match_substring_regex(column, TIMESTAMP)
    safe = pc.if_else(pc.fill_null(ok, False), column, pa.scalar("2000-01-01T00:00:00Z"))
    safe = pc.if_else(pc.is_valid(column), safe, column)
    stamps = pc.cast(safe, TIMESTAMP_TYPE)
    micros = stamps.cast(pa.int64())
    inside = pc.and_(pc.greater_equal(micros, EARLIEST_US), pc.less(micros, LATEST_US))
    return stamps, pc.and_(ok, inside)


__all__ = ["BatchResult", "BatchRules", "FieldRule", "UnsupportedModelError"]
