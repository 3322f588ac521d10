"""What a source dialect generates: catalogue queries, chunk reads, positions and deltas.

A dialect only writes SQL text (and connection-string options); running it is
the source's job. Parameters are always bound as strings and cast in SQL
(``CAST(? AS type)``), because arrow-odbc binds text parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


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
        t = self.source_type.lower()
        if t in ("text", "json", "jsonb", "xml", "character varying", "ntext"):
            return "text"
        if t in ("bytea", "image"):
            return "binary"
        if t.endswith("(max)"):
            return "binary" if "binary" in t else "text"
        return None


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
