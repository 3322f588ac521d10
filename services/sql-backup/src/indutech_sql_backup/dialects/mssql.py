"""SQL Server 2016+ (Microsoft ODBC Driver 18 or FreeTDS): T-SQL generation.

Each read runs under SNAPSHOT isolation (the database needs
``ALLOW_SNAPSHOT_ISOLATION ON``), so a chunk is one consistent view without
blocking writers. The position is ``{CHANGE_TRACKING_CURRENT_VERSION()}:
{MIN_ACTIVE_ROWVERSION()}``: a delta reads rows whose ``rowversion`` is at or
past the previous run's minimum active rowversion (so a transaction still open
then is not missed) and deletes from Change Tracking since the previous
version (``ALTER TABLE … ENABLE CHANGE_TRACKING`` on every backed-up table).
Change Tracking records no row for a TRUNCATE; it raises the table's
``CHANGE_TRACKING_MIN_VALID_VERSION`` instead (as its retention cleanup does):
when the previous run's version is below it, the planner turns that table's delta
into a re-snapshot of the whole table, which restore loads in place of the table.

No SQL Server runs on our machines: the generated T-SQL is checked by parsing
it with sqlglot's ``tsql`` dialect (tests/unit/sql_backup/test_dialects.py),
not by executing it.
"""

from __future__ import annotations

from indutech_sql_backup.dialects.base import Column, Dialect, Query, TableInfo, TableRef
from indutech_sql_backup.dialects.types import ColumnType, mssql_type
from indutech_sql_backup.errors import ChangeTrackingError

SNAPSHOT_PREAMBLE = "SET NOCOUNT ON; SET TRANSACTION ISOLATION LEVEL SNAPSHOT; "
_SNAPSHOT = SNAPSHOT_PREAMBLE


class MssqlDialect(Dialect):
    name = "mssql"

    text_type = "NVARCHAR(MAX)"

    def quote(self, identifier: str) -> str:
        return "[" + identifier.replace("]", "]]") + "]"

    def type_of(self, source_type: str) -> ColumnType:
        return mssql_type(source_type)

    def connection_options(self) -> str:
        return "ApplicationIntent=ReadOnly;"

    def list_tables(self) -> Query:
        return Query(
            "SELECT s.name, t.name FROM sys.tables AS t JOIN sys.schemas AS s "
            "ON s.schema_id = t.schema_id WHERE t.is_ms_shipped = 0 ORDER BY s.name, t.name"
        )

    def list_columns(self, ref: TableRef) -> Query:
        return Query(
            "SELECT c.name, CASE "
            "WHEN ty.name IN ('varchar', 'char', 'varbinary', 'binary') THEN ty.name + '(' + "
            "CASE WHEN c.max_length = -1 THEN 'max' ELSE CAST(c.max_length AS VARCHAR(10)) END "
            "+ ')' "
            "WHEN ty.name IN ('nvarchar', 'nchar') THEN ty.name + '(' + "
            "CASE WHEN c.max_length = -1 THEN 'max' ELSE CAST(c.max_length / 2 AS VARCHAR(10)) "
            "END + ')' "
            "WHEN ty.name IN ('decimal', 'numeric') THEN ty.name + '(' + "
            "CAST(c.precision AS VARCHAR(10)) + ',' + CAST(c.scale AS VARCHAR(10)) + ')' "
            "WHEN ty.name IN ('datetime2', 'datetimeoffset', 'time') THEN ty.name + '(' + "
            "CAST(c.scale AS VARCHAR(10)) + ')' ELSE ty.name END, "
            "CASE WHEN c.is_nullable = 1 THEN 'YES' ELSE 'NO' END "
            "FROM sys.columns AS c JOIN sys.types AS ty ON ty.user_type_id = c.user_type_id "
            "WHERE c.object_id = OBJECT_ID(?) ORDER BY c.column_id",
            (self.table(ref),),
        )

    def primary_key(self, ref: TableRef) -> Query:
        return Query(
            "SELECT c.name FROM sys.indexes AS i JOIN sys.index_columns AS ic "
            "ON ic.object_id = i.object_id AND ic.index_id = i.index_id "
            "JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id "
            "WHERE i.is_primary_key = 1 AND i.object_id = OBJECT_ID(?) ORDER BY ic.key_ordinal",
            (self.table(ref),),
        )

    def _read_as(self, column: Column, value: str) -> str:
        """How a value is read (the type matrix): UTC timestamps at the column's own
        precision, text uuids, rowversion as BIGINT, money as its exact DECIMAL."""
        return self.read_expression(column, value)

    def _null(self, column: Column) -> str:
        kind = column.source_type.lower()
        if kind in ("rowversion", "timestamp"):
            return "CAST(NULL AS BIGINT)"
        if kind.startswith("datetimeoffset"):
            scale = kind.partition("(")[2].rstrip(")") or "7"
            return f"CAST(NULL AS DATETIME2({int(scale)}))"
        return self._read_as(column, f"CAST(NULL AS {column.source_type.upper()})")

    def _expr(self, column: Column) -> str:
        name = self.quote(column.name)
        read = self._read_as(column, name)
        return name if read == name else f"{read} AS {name}"

    def select_list(self, table: TableInfo) -> str:
        return ", ".join(self._expr(c) for c in table.columns)

    def cast_param(self, column: Column) -> str:
        kind = column.source_type.lower()
        if kind in ("rowversion", "timestamp"):
            return "CAST(CAST(? AS BIGINT) AS BINARY(8))"
        return f"CAST(? AS {column.source_type.upper()})"

    def boundaries(self, table: TableInfo, every: int) -> Query:
        column = self.quote(table.chunk_column.name)
        return Query(
            f"SELECT CAST(r.v AS NVARCHAR(400)) FROM (SELECT {column} AS v, "  # noqa: S608
            f"ROW_NUMBER() OVER (ORDER BY {column}) AS rn FROM {self.table(table.ref)}) AS r "
            f"WHERE r.rn % {int(every)} = 0 AND r.v < (SELECT MAX({column}) FROM "
            f"{self.table(table.ref)}) ORDER BY r.rn"
        )

    def position(self) -> Query:
        return Query(
            "SELECT CONCAT(CAST(CHANGE_TRACKING_CURRENT_VERSION() AS VARCHAR(20)), ':', "
            "CAST(CAST(MIN_ACTIVE_ROWVERSION() AS BIGINT) AS VARCHAR(20)))"
        )

    def chunk(self, table: TableInfo, lo: str | None, hi: str | None) -> Query:
        where = self.range_predicate(table, lo, hi)
        return Query(
            f"{_SNAPSHOT}SELECT {self.select_list(table)} FROM {self.table(table.ref)} "  # noqa: S608
            f"WHERE {where.sql} ORDER BY {self.order_by(table)}",
            where.params,
        )

    def _since_rowversion(self, table: TableInfo) -> str:
        if table.watermark is None:
            raise ValueError(f"{table.ref.qualified} has no watermark column")
        return f"{self.quote(table.watermark)} >= CAST(CAST(? AS BIGINT) AS BINARY(8))"

    def _changes(self, table: TableInfo) -> str:
        return f"CHANGETABLE(CHANGES {self.table(table.ref)}, CAST(? AS BIGINT)) AS ct"

    def delta(
        self, table: TableInfo, since: str, lo: str | None = None, hi: str | None = None
    ) -> Query:
        tracking_version, _, min_active = since.partition(":")
        column = table.chunk_column
        in_range = self.range_predicate(table, lo, hi)
        deleted_range = self.range_on(f"ct.{self.quote(column.name)}", column, lo, hi)
        deleted = ", ".join(
            self._read_as(c, f"ct.{self.quote(c.name)}") if c.name in table.key else self._null(c)
            for c in table.columns
        )
        sql = (
            f"{_SNAPSHOT}SELECT 'U' AS [_op], {self.select_list(table)} "  # noqa: S608
            f"FROM {self.table(table.ref)} WHERE {self._since_rowversion(table)} "
            f"AND {in_range.sql} "
            f"UNION ALL SELECT 'D' AS [_op], {deleted} FROM {self._changes(table)} "
            f"WHERE ct.SYS_CHANGE_OPERATION = 'D' AND {deleted_range.sql}"
        )
        return Query(sql, (min_active, *in_range.params, tracking_version, *deleted_range.params))

    def delta_boundaries(self, table: TableInfo, since: str, every: int) -> Query:
        tracking_version, _, min_active = since.partition(":")
        column = self.quote(table.chunk_column.name)
        sql = (
            f"SELECT CAST(r.v AS NVARCHAR(400)) FROM (SELECT c.v, "  # noqa: S608
            "ROW_NUMBER() OVER (ORDER BY c.v) AS rn, MAX(c.v) OVER () AS last_v FROM "
            f"(SELECT {column} AS v FROM {self.table(table.ref)} "
            f"WHERE {self._since_rowversion(table)} UNION ALL SELECT ct.{column} "
            f"FROM {self._changes(table)} WHERE ct.SYS_CHANGE_OPERATION = 'D') AS c) AS r "
            f"WHERE r.rn % {int(every)} = 0 AND r.v < r.last_v ORDER BY r.rn"
        )
        return Query(sql, (min_active, tracking_version))

    def delta_check(self, table: TableInfo) -> Query:
        """The oldest Change Tracking version still valid for the table. A TRUNCATE (which
        Change Tracking does not record row by row) raises it, and so does the retention
        cleanup: changes since an older version are lost, the table must be read again."""
        return Query(
            "SELECT CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(?))", (self.table(table.ref),)
        )

    def delta_possible(self, since: str, value: object) -> bool:
        tracking_version = since.partition(":")[0]
        if value is None:
            raise ChangeTrackingError(
                "Change Tracking is not enabled on the table (CHANGE_TRACKING_MIN_VALID_VERSION "
                "is NULL): run the T-SQL of 'sql-backup prepare-source', then the next delta "
                "re-reads the table."
            )
        return int(tracking_version) >= int(str(value))

    def lob_lengths(self, table: TableInfo, where: Query | None) -> Query:
        lobs = [c for c in table.columns if c.lob]
        select = ", ".join(self._lob_length(c) for c in lobs)
        predicate = where or Query("1=1")
        return Query(
            f"SELECT {select} FROM {self.table(table.ref)} WHERE {predicate.sql}",  # noqa: S608
            predicate.params,
        )

    def _lob_length(self, column: Column) -> str:
        """The largest value as read, in bytes of UTF-8 (what arrow-odbc fetches on Linux):
        DATALENGTH counts UTF-16 for N-types and xml once converted, and one UTF-16 unit
        becomes at most 3 UTF-8 bytes; binary and 8-bit text are counted as they are."""
        value = self._read_as(column, self.quote(column.name))
        kind = column.source_type.lower()
        wide = kind.startswith("n") or kind == "xml"
        length = f"CAST(COALESCE(MAX(DATALENGTH({value})), 0) AS BIGINT)"
        return f"{length} * 3 / 2" if wide else length

    def enable_change_tracking(self, database: str, ref: TableRef) -> list[str]:
        """What a DBA runs once on the source (printed by ``sql-backup prepare-source``)."""
        db = self.quote(database)
        return [
            f"ALTER DATABASE {db} SET ALLOW_SNAPSHOT_ISOLATION ON",
            f"ALTER DATABASE {db} SET CHANGE_TRACKING = ON "
            "(CHANGE_RETENTION = 7 DAYS, AUTO_CLEANUP = ON)",
            f"ALTER TABLE {self.table(ref)} ENABLE CHANGE_TRACKING",
        ]
