"""Explicit Arrow schemas derived from the pydantic record models.

Every Parquet file of the lake is written with a schema taken from the model,
never inferred from data: a column keeps its type even in a file where it is
all null, and money is ``decimal128(precision, scale)`` from the field's
``max_digits``/``decimal_places`` (a float would lose cents). Timestamps are
microseconds in UTC, as DESIGN.md fixes for the lake.
"""

from __future__ import annotations

import types
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


class ArrowSchemaError(TypeError):
    """A model field has a type with no agreed Arrow mapping."""


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of ``model``: one field per model field, in declaration order."""
    fields = []
    for name, info in model.model_fields.items():
        arrow_type, nullable = _arrow_type(info.annotation, info, f"{model.__name__}.{name}")
        fields.append(pa.field(name, arrow_type, nullable=nullable or not info.is_required()))
    return pa.schema(fields)


def _decimal_type(info: FieldInfo, where: str) -> pa.DataType:
    digits = places = None
    for item in info.metadata:
        digits = getattr(item, "max_digits", digits)
        places = getattr(item, "decimal_places", places)
    if digits is None or places is None:
        raise ArrowSchemaError(
            f"{where}: a Decimal needs max_digits and decimal_places to map to decimal128"
        )
    return pa.decimal128(digits, places)


def _arrow_type(annotation: Any, info: FieldInfo, where: str) -> tuple[pa.DataType, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) != 1:
            raise ArrowSchemaError(f"{where}: only Optional[X] unions map to Arrow")
        arrow_type, _ = _arrow_type(members[0], info, where)
        return arrow_type, True
    if origin is not None and get_origin(annotation) is Literal:
        values = get_args(annotation)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return pa.int16(), False
        if all(isinstance(v, str) for v in values):
            return pa.string(), False
        raise ArrowSchemaError(f"{where}: a Literal must be all int or all str")
    if get_args(annotation) and hasattr(annotation, "__metadata__"):  # Annotated[X, ...]
        return _arrow_type(get_args(annotation)[0], info, where)
    return _scalar_type(annotation, info, where), False


_SCALARS: tuple[tuple[type, pa.DataType], ...] = (
    (Enum, pa.string()),
    (bool, pa.bool_()),
    (int, pa.int64()),
    (float, pa.float64()),
    (datetime, TIMESTAMP_TYPE),
    (str, pa.string()),
)


def _scalar_type(annotation: Any, info: FieldInfo, where: str) -> pa.DataType:
    if annotation is AwareDatetime:
        return TIMESTAMP_TYPE
    if isinstance(annotation, type):
        if issubclass(annotation, Decimal):
            return _decimal_type(info, where)
        for python_type, arrow_type in _SCALARS:
            if issubclass(annotation, python_type):
                return arrow_type
    raise ArrowSchemaError(f"{where}: no Arrow mapping for {annotation!r}")
