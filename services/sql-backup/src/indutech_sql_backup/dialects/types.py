"""The type matrix: how each source column type is read, stored in Parquet and restored.

Every column is either exact or refused before anything is written (``UnsupportedTypeError``
names the column and what to do). Nothing is cast to a narrower type on the way:

- Types the ODBC driver hands over exactly are read as they are (integers, floats,
  booleans, dates, times, timestamps, ``numeric(p,s)`` up to 38 digits, text, binary).
- Types it would narrow or cannot describe are read as their own text form, which the
  database parses back exactly (``numeric`` without precision or beyond 38 digits, money,
  interval, time with time zone, arrays, json/jsonb, xml, and every type the matrix does not
  name, such as enums, ranges or inet). Restore casts that text back on the server
  (``via_text``), so the restored column has the source type and the same value.
- Values the driver silently changes (psqlODBC turns ``infinity`` into 9999-12-31 or today,
  ``NaN`` into 0, BC dates into AD and ``24:00:00`` into midnight) stop the read with an
  error naming the column instead (``guard``).

``README.md`` (section "Type matrix") is this module as a table; the unit tests walk it
row by row and the integration test round-trips the PostgreSQL rows for real.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from indutech_sql_backup.errors import UnsupportedTypeError

DECIMAL128_MAX_PRECISION = 38
MICROS_DIGITS = 6


@dataclass(frozen=True)
class ColumnType:
    """How one source type is backed up and restored."""

    arrow: pa.DataType
    """The Parquet column's type (what ``verify`` and restore expect in every part)."""
    restore_type: str
    """The PostgreSQL type restore creates for a source of another dialect."""
    read: str = "{}"
    """The select expression, ``{}`` standing for the quoted column."""
    via_text: bool = False
    """Stored as the source's own text form; restore casts it back on the server."""
    guard: str | None = None
    """A condition (``{0}`` = the column) true for values the driver would change: the read
    fails on them, naming the column, rather than storing a different value."""
    guard_type: str = ""
    """The type of the read expression (the guard's failing cast produces it)."""
    guard_parse: str = ""
    """A stricter type to parse the failure message as first (PostgreSQL's time parser reads
    words as time zone names and would report those instead of the message)."""
    lob: str | None = None
    """'text' or 'binary' when values are unbounded: buffers are sized per chunk."""


_TEXT = pa.string()


def _parens(source_type: str) -> tuple[str, tuple[int, ...]]:
    """('numeric', (10, 2)) from 'numeric(10,2)'; ('time without time zone', (3,)) from
    'time(3) without time zone'."""
    match = re.search(r"\(([^)]*)\)", source_type)
    if match is None:
        return source_type.strip().lower(), ()
    base = " ".join((source_type[: match.start()] + source_type[match.end() :]).lower().split())
    numbers = tuple(int(n) for n in match.group(1).replace(" ", "").split(",") if n.isdigit())
    return base, numbers


# -- PostgreSQL (the local stand-in, through psqlODBC) ------------------------------------

_PG_NATIVE = {
    "smallint": ColumnType(pa.int16(), "smallint"),
    "integer": ColumnType(pa.int32(), "integer"),
    "bigint": ColumnType(pa.int64(), "bigint"),
    "real": ColumnType(pa.float32(), "real"),
    "double precision": ColumnType(pa.float64(), "double precision"),
    "boolean": ColumnType(pa.bool_(), "boolean"),
    "bytea": ColumnType(pa.binary(), "bytea", lob="binary"),
    "text": ColumnType(_TEXT, "text", lob="text"),
    "character varying": ColumnType(_TEXT, "text"),
    "character": ColumnType(_TEXT, "text"),
    "uuid": ColumnType(_TEXT, "uuid", read="CAST({} AS char(36))"),
    # psqlODBC reads BC dates as AD, 'infinity' as 9999-12-31 (timestamps) or today (dates).
    "date": ColumnType(
        pa.date32(),
        "date",
        guard="NOT isfinite({0}) OR {0} < CAST('0001-01-01' AS date)",
        guard_type="date",
    ),
    "timestamp without time zone": ColumnType(
        pa.timestamp("us"),
        "timestamp",
        guard="NOT isfinite({0}) OR {0} < CAST('0001-01-01' AS timestamp) "
        "OR {0} >= CAST('10000-01-01' AS timestamp)",
        guard_type="timestamp",
    ),
    "timestamp with time zone": ColumnType(
        pa.timestamp("us", tz="UTC"),
        "timestamptz",
        read="({} AT TIME ZONE 'UTC')",
        guard="NOT isfinite({0}) OR ({0} AT TIME ZONE 'UTC') < CAST('0001-01-01' AS timestamp) "
        "OR ({0} AT TIME ZONE 'UTC') >= CAST('10000-01-01' AS timestamp)",
        guard_type="timestamp",
    ),
    # 24:00:00 is a valid PostgreSQL time that psqlODBC reads as 00:00:00.
    "time without time zone": ColumnType(
        pa.time64("us"),
        "time",
        guard="{0} = CAST('24:00:00' AS time)",
        guard_type="time",
        guard_parse="timestamp",
    ),
    "json": ColumnType(_TEXT, "json", read="CAST({} AS text)", via_text=True, lob="text"),
    "jsonb": ColumnType(_TEXT, "jsonb", read="CAST({} AS text)", via_text=True, lob="text"),
    "xml": ColumnType(_TEXT, "xml", read="CAST({} AS text)", via_text=True, lob="text"),
    # psqlODBC reads money as float32: its exact numeric value as text instead.
    "money": ColumnType(_TEXT, "money", read="CAST(CAST({} AS numeric) AS text)", via_text=True),
    "interval": ColumnType(_TEXT, "interval", read="CAST({} AS text)", via_text=True),
    "time with time zone": ColumnType(
        _TEXT, "time with time zone", read="CAST({} AS text)", via_text=True
    ),
}
_NAN = (
    "{0} = CAST('NaN' AS numeric) "
    "OR {0} IN (CAST('Infinity' AS numeric), CAST('-Infinity' AS numeric))"
)


def postgres_type(source_type: str) -> ColumnType:
    """The matrix row of a PostgreSQL column type (as ``format_type`` spells it)."""
    base, numbers = _parens(source_type)
    if base in ("numeric", "decimal"):
        if numbers and numbers[0] <= DECIMAL128_MAX_PRECISION:
            precision, scale = numbers[0], (numbers[1] if len(numbers) > 1 else 0)
            # psqlODBC reads NaN as 0: refused rather than stored as a number it is not.
            return ColumnType(
                pa.decimal128(precision, scale),
                f"numeric({precision},{scale})",
                guard=_NAN,
                guard_type=f"numeric({precision},{scale})",
            )
        # Without a precision psqlODBC guesses numeric(28,6) and cuts the rest; past 38
        # digits decimal128 cannot hold it. The text form is exact (NaN included).
        return ColumnType(
            _TEXT,
            source_type,
            read="CAST({} AS text)",
            via_text=True,
            lob=None if numbers else "text",
        )
    if base == "character varying" and not numbers:
        return _PG_NATIVE["text"]
    if base in _PG_NATIVE:
        return _PG_NATIVE[base]
    # Everything else (arrays, enums, domains, ranges, inet, bit strings, tsvector, …) as
    # its text form: PostgreSQL's own output/input pair, exact by design (an array literal
    # keeps nesting, NULLs and quoting). Restore needs the type in the target database (an
    # enum must be created there first).
    return ColumnType(_TEXT, source_type, read="CAST({} AS text)", via_text=True, lob="text")


# -- SQL Server (Microsoft ODBC Driver 18 or FreeTDS) -------------------------------------


def _mssql_time_unit(scale: int) -> str:
    return "us" if scale <= MICROS_DIGITS else "ns"


_MSSQL_REFUSED = {
    "sql_variant": (
        "its values have a different type per row and no Parquet type holds them",
        "change the column to one concrete type",
    ),
    "geography": (
        "a CLR spatial type the ODBC drivers return as opaque bytes",
        "store its WKB (col.STAsBinary()) and SRID (col.STSrid) in columns of their own",
    ),
    "geometry": (
        "a CLR spatial type the ODBC drivers return as opaque bytes",
        "store its WKB (col.STAsBinary()) and SRID (col.STSrid) in columns of their own",
    ),
}

_MSSQL_FIXED = {
    "bit": ColumnType(pa.bool_(), "boolean"),
    "tinyint": ColumnType(pa.uint8(), "smallint"),
    "smallint": ColumnType(pa.int16(), "smallint"),
    "int": ColumnType(pa.int32(), "integer"),
    "bigint": ColumnType(pa.int64(), "bigint"),
    "real": ColumnType(pa.float32(), "real"),
    "float": ColumnType(pa.float64(), "double precision"),
    "money": ColumnType(pa.decimal128(19, 4), "numeric(19,4)", read="CAST({} AS DECIMAL(19, 4))"),
    "smallmoney": ColumnType(
        pa.decimal128(10, 4), "numeric(10,4)", read="CAST({} AS DECIMAL(10, 4))"
    ),
    "date": ColumnType(pa.date32(), "date"),
    # datetime counts 1/300 s; DATETIME2(3) is how SQL Server itself rounds it to ms, and
    # converting back gives the same tick.
    "datetime": ColumnType(pa.timestamp("us"), "timestamp", read="CAST({} AS DATETIME2(3))"),
    "smalldatetime": ColumnType(pa.timestamp("us"), "timestamp"),
    "uniqueidentifier": ColumnType(_TEXT, "uuid", read="LOWER(CAST({} AS CHAR(36)))"),
    "rowversion": ColumnType(pa.int64(), "bigint", read="CAST({} AS BIGINT)"),
    "timestamp": ColumnType(pa.int64(), "bigint", read="CAST({} AS BIGINT)"),
    "text": ColumnType(_TEXT, "text", lob="text"),
    "ntext": ColumnType(_TEXT, "text", read="CAST({} AS NVARCHAR(MAX))", lob="text"),
    "image": ColumnType(pa.binary(), "bytea", read="CAST({} AS VARBINARY(MAX))", lob="binary"),
    # SQL Server's xml is not always a PostgreSQL xml document: kept as its text.
    "xml": ColumnType(_TEXT, "text", read="CAST({} AS NVARCHAR(MAX))", lob="text"),
    "hierarchyid": ColumnType(_TEXT, "text", read="CAST({} AS NVARCHAR(4000))"),
    "sysname": ColumnType(_TEXT, "varchar(128)"),
}


def mssql_type(source_type: str) -> ColumnType:
    """The matrix row of a SQL Server column type (as the dialect's catalogue query spells
    it); raises ``UnsupportedTypeError`` (without a column name) for the refused ones."""
    base, numbers = _parens(source_type)
    if base in _MSSQL_FIXED:
        return _MSSQL_FIXED[base]
    unbounded = source_type.lower().endswith("(max)")
    if base in ("char", "varchar", "nchar", "nvarchar"):
        restore = "text" if unbounded or not numbers else f"varchar({numbers[0]})"
        return ColumnType(_TEXT, restore, lob="text" if unbounded else None)
    if base in ("binary", "varbinary"):
        return ColumnType(pa.binary(), "bytea", lob="binary" if unbounded else None)
    if base in ("decimal", "numeric") and len(numbers) == 2:  # noqa: PLR2004 - (p, s)
        precision, scale = numbers
        return ColumnType(pa.decimal128(precision, scale), f"numeric({precision},{scale})")
    if base in ("datetime2", "time", "datetimeoffset"):
        scale = numbers[0] if numbers else 7
        unit = _mssql_time_unit(scale)
        # 7 digits (100 ns, the default) are kept as ns: exact in Parquet; restore refuses a
        # value whose 100 ns digit PostgreSQL (µs) cannot hold rather than rounding it.
        arrow, restore, read = {
            "time": (pa.time64(unit), "time", "{}"),
            "datetime2": (pa.timestamp(unit), "timestamp", "{}"),
            "datetimeoffset": (
                pa.timestamp(unit, tz="UTC"),
                "timestamptz",
                f"CAST(SWITCHOFFSET({{}}, '+00:00') AS DATETIME2({scale}))",
            ),
        }[base]
        return ColumnType(arrow, restore, read=read)
    if base in _MSSQL_REFUSED:
        reason, fix = _MSSQL_REFUSED[base]
        raise UnsupportedTypeError(f"{source_type} is refused: {reason}. To back it up, {fix}.")
    raise UnsupportedTypeError(
        f"{source_type} is not in the type matrix (an alias or CLR type?): its values could "
        "not be stored exactly. Change the column to a base SQL Server type."
    )


def lob_kind(source_type: str) -> str | None:
    """'text'/'binary' for unbounded values of either dialect (sized per chunk), else None."""
    t = source_type.lower()
    if t.endswith("(max)"):
        return "binary" if "binary" in t else "text"
    if t in _MSSQL_FIXED and t not in ("text",):
        return _MSSQL_FIXED[t].lob
    try:
        return postgres_type(source_type).lob
    except UnsupportedTypeError:  # pragma: no cover - postgres_type refuses nothing
        return None


def _is_text(arrow_type: pa.DataType) -> bool:
    return bool(pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type))


def _is_binary(arrow_type: pa.DataType) -> bool:
    return bool(pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type))


_SAME_FAMILY = (pa.types.is_integer, pa.types.is_time, pa.types.is_date, _is_text, _is_binary)


def stored_type(expected: pa.DataType, read: pa.DataType) -> bool:
    """Whether what the driver returned converts to ``expected`` without changing a value:
    the same family, never narrower (a safe Arrow cast then does it, and fails on any value
    that would change, such as an integer out of range or a truncated time)."""
    if read == expected:
        return True
    if pa.types.is_floating(read) and pa.types.is_floating(expected):
        return bool(read.bit_width <= expected.bit_width)
    if pa.types.is_decimal(read) and pa.types.is_decimal(expected):
        return bool(read.scale == expected.scale and read.precision <= expected.precision)
    if pa.types.is_timestamp(read) and pa.types.is_timestamp(expected):
        # A zoned column is read as UTC wall time (AT TIME ZONE 'UTC' / SWITCHOFFSET).
        return bool(read.tz == expected.tz or (read.tz is None and expected.tz == "UTC"))
    return any(family(read) and family(expected) for family in _SAME_FAMILY)
