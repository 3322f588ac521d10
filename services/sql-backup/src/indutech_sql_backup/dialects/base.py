"""What a source dialect generates: catalogue queries, chunk reads, positions and deltas.

A dialect only writes SQL text (and connection-string options); running it is
the source's job. Parameters are always bound as strings and cast in SQL
(``CAST(? AS type)``), because arrow-odbc binds text parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from indutech_sql_backup.dialects.types import ColumnType, lob_kind
from indutech_sql_backup.errors import UnsupportedTypeError

if TYPE_CHECKING:
    from indutech_common.schemas.sql_backup import Plan


@dataclass(frozen=True)
class Column:
    name: str
    source_type: str
    nullable: bool = True

    @property
    def lob(self) -> bool:
        """Unbounded text or binary: buffers are sized from the chunk's largest value."""
        return self.lob_kind is not None

    @property
    def lob_kind(self) -> str | None:
        """'text' or 'binary' (the type matrix's ``lob``), None for bounded values."""
        return lob_kind(self.source_type)


@dataclass(frozen=True)
class TableRef:
    schema: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @classmethod
    def parse(cls, text: str) -> TableRef:
        schema, dot, name = text.partition(".")
        if not dot or not schema or not name or "." in name:
            raise ValueError(f"a table is named schema.table, got {text!r}")
        return cls(schema, name)


@dataclass(frozen=True)
class TableInfo:
    ref: TableRef
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    watermark: str | None = None
    key_from: str = "primary key"
    extra: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @classmethod
    def of_plan(cls, plan: Plan) -> TableInfo:
        """The table as a plan recorded it (its columns then, not the source's now)."""
        return cls(
            ref=TableRef(plan.schema_name, plan.table),
            columns=tuple(Column(c.name, c.source_type, c.nullable) for c in plan.columns),
            key=plan.key,
            watermark=plan.watermark,
            key_from=plan.key_from,
        )

    @property
    def chunk_column(self) -> Column:
        """Chunks are ranges of the leading key column: every row falls in exactly one."""
        return self.column(self.key[0])


@dataclass(frozen=True)
class Query:
    sql: str
    params: tuple[str | None, ...] = ()


class Dialect(ABC):
    name: str

    @abstractmethod
    def quote(self, identifier: str) -> str: ...

    @abstractmethod
    def type_of(self, source_type: str) -> ColumnType:
        """The type matrix row of a source type (``dialects/types.py``); raises
        ``UnsupportedTypeError`` for a refused type."""

    def column_type(self, table: TableRef, column: Column) -> ColumnType:
        """The matrix row of a column; a refused type names the column and what to do."""
        try:
            return self.type_of(column.source_type)
        except UnsupportedTypeError as exc:
            raise UnsupportedTypeError(
                f"column {table.qualified}.{column.name}: {exc} Or exclude the table "
                "(SQL_BACKUP_EXCLUDE); nothing of it was written."
            ) from None

    def check_columns(self, table: TableInfo) -> None:
        """Refuse, before anything is written, a table with a column the matrix refuses."""
        for column in table.columns:
            self.column_type(table.ref, column)

    def read_expression(self, column: Column, value: str) -> str:
        """How a value of the column is selected (``value``: the column or an expression of
        its type): the matrix's read, behind its guard when the driver would change some
        values (the read then fails naming the column instead)."""
        row = self.type_of(column.source_type)
        read = row.read.format(value)
        if row.guard is None:
            return read
        message = (
            f"sql-backup refuses column {column.name}: the ODBC driver would change this "
            "value; correct it or exclude the table: "
        ).replace("'", "''")
        failing = f"'{message}' || CAST({value} AS {self.text_type})"
        if row.guard_parse:
            failing = f"CAST({failing} AS {row.guard_parse})"
        failing = f"CAST({failing} AS {row.guard_type})"
        # The CAST around the CASE keeps the type's modifier (a CASE drops numeric's
        # precision and scale, and the driver would then describe a different type).
        return (
            f"CAST(CASE WHEN {row.guard.format(value)} THEN {failing} ELSE {read} END "
            f"AS {row.guard_type})"
        )

    text_type = "text"

    def table(self, ref: TableRef) -> str:
        return f"{self.quote(ref.schema)}.{self.quote(ref.name)}"

    @abstractmethod
    def connection_options(self) -> str:
        """Extra ODBC options appended to the common connection string."""

    @abstractmethod
    def list_tables(self) -> Query:
        """(schema, table) of every base table outside the system schemas."""

    @abstractmethod
    def list_columns(self, ref: TableRef) -> Query:
        """(name, type, is_nullable 'YES'/'NO') in ordinal order."""

    @abstractmethod
    def primary_key(self, ref: TableRef) -> Query:
        """Primary key column names in key order."""

    @abstractmethod
    def select_list(self, table: TableInfo) -> str:
        """The columns as read: timestamps with a zone are converted to UTC."""

    @abstractmethod
    def boundaries(self, table: TableInfo, every: int) -> Query:
        """Every ``every``-th value of the chunk column, ascending, below its maximum (a
        boundary at the maximum would only add an empty last chunk)."""

    @abstractmethod
    def position(self) -> Query:
        """One text value: the source's change position now (where the next delta starts)."""

    @abstractmethod
    def chunk(self, table: TableInfo, lo: str | None, hi: str | None) -> Query:
        """The rows with ``lo < chunk column <= hi`` (None: unbounded), in key order."""

    @abstractmethod
    def delta(
        self, table: TableInfo, since: str, lo: str | None = None, hi: str | None = None
    ) -> Query:
        """``_op`` plus the columns of every row changed since ``since`` whose chunk column is
        in ``(lo, hi]`` (None: unbounded): 'U' (insert or update: the row as it is now), 'D'
        (delete: the key columns only, the rest NULL) and, where the dialect captures
        TRUNCATE, one 'T' row (every column NULL) when the table was truncated since
        ``since``. A key's upsert and its deletes always fall in the same range."""

    @abstractmethod
    def delta_boundaries(self, table: TableInfo, since: str, every: int) -> Query:
        """Like ``boundaries``, over the chunk-column values of the changes since ``since``
        (changed rows and deletes): the key ranges of a delta's chunks."""

    def delta_check(self, table: TableInfo) -> Query | None:
        """One value that ``delta_possible`` judges (None: deltas are always possible)."""
        del table
        return None

    def delta_possible(self, since: str, value: object) -> bool:
        """Whether the changes since ``since`` can still be read (else: re-snapshot)."""
        del since, value
        return True

    @abstractmethod
    def lob_lengths(self, table: TableInfo, where: Query | None) -> Query:
        """The largest byte length of each LOB column (over the chunk's rows)."""

    def cast_param(self, column: Column) -> str:
        return f"CAST(? AS {column.source_type})"

    def lob_lengths_delta(
        self, table: TableInfo, since: str, lo: str | None, hi: str | None
    ) -> Query:
        """The largest LOB bytes a delta chunk will read (by default: over its key range)."""
        del since
        return self.lob_lengths(table, self.range_predicate(table, lo, hi))

    def range_on(self, expression: str, column: Column, lo: str | None, hi: str | None) -> Query:
        """``lo < expression <= hi`` (None: unbounded), the bounds cast to the column's type."""
        parts: list[str] = []
        params: list[str | None] = []
        if lo is not None:
            parts.append(f"{expression} > {self.cast_param(column)}")
            params.append(lo)
        if hi is not None:
            parts.append(f"{expression} <= {self.cast_param(column)}")
            params.append(hi)
        return Query(" AND ".join(parts) or "1=1", tuple(params))

    def range_predicate(self, table: TableInfo, lo: str | None, hi: str | None) -> Query:
        column = table.chunk_column
        return self.range_on(self.quote(column.name), column, lo, hi)

    def order_by(self, table: TableInfo) -> str:
        return ", ".join(self.quote(k) for k in table.key)
