"""PostgreSQL through psqlODBC: the local stand-in for SQL Server, with the same features.

SQL Server's rowversion becomes a ``row_version bigint`` column that a trigger
sets to the writing transaction's id (``pg_current_xact_id()``); its
``MIN_ACTIVE_ROWVERSION()`` becomes the current snapshot (``pg_current_snapshot()``,
which lists the transactions still in flight). A delta since a snapshot ``S``
is every row whose transaction ``S`` could not see: exact, even for
transactions that were open while ``S`` was taken. Change Tracking's deletes
become a ``indutech_deletes`` log table filled by an ``AFTER DELETE`` trigger; a
statement-level ``AFTER TRUNCATE`` trigger logs a truncate marker (``op = 'T'``) there
too, which SQL Server's Change Tracking has no equivalent of (see the mssql dialect).
``install_change_capture`` writes that DDL (the generator and ``sql-backup
prepare-source`` run it).
"""

from __future__ import annotations

from indutech_sql_backup.dialects.base import Column, Dialect, Query, TableInfo, TableRef
from indutech_sql_backup.dialects.types import ColumnType, postgres_type

DELETES_TABLE = "indutech_deletes"


class PostgresDialect(Dialect):
    name = "postgres"

    def quote(self, identifier: str) -> str:
        return '"' + identifier.replace('"', '""') + '"'

    def type_of(self, source_type: str) -> ColumnType:
        return postgres_type(source_type)

    def connection_options(self) -> str:
        # Cursor-based fetches (bounded memory, the fastest arrow-odbc path measured here),
        # booleans as SQL_BIT, not '1'/'0' text.
        return "UseDeclareFetch=1;Fetch=10000;BoolsAsChar=0;"

    def list_tables(self) -> Query:
        return Query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
        )

    def list_columns(self, ref: TableRef) -> Query:
        return Query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), "
            "CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ? AND c.relname = ? AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            (ref.schema, ref.name),
        )

    def primary_key(self, ref: TableRef) -> Query:
        return Query(
            "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
            "WHERE i.indisprimary AND n.nspname = ? AND c.relname = ? ORDER BY k.ord",
            (ref.schema, ref.name),
        )

    def _read_as(self, column: Column, value: str) -> str:
        """How a value of the column is read (the type matrix): zoned timestamps in UTC,
        uuids and the types psqlODBC would narrow as their text, special values refused."""
        return self.read_expression(column, value)

    def _expr(self, column: Column) -> str:
        name = self.quote(column.name)
        read = self._read_as(column, name)
        return name if read == name else f"{read} AS {name}"

    def select_list(self, table: TableInfo) -> str:
        return ", ".join(self._expr(c) for c in table.columns)

    def boundaries(self, table: TableInfo, every: int) -> Query:
        column = self.quote(table.chunk_column.name)
        return Query(
            f"SELECT CAST(v AS text) FROM (SELECT {column} AS v, "  # noqa: S608 - identifiers quoted
            f"row_number() OVER (ORDER BY {column}) AS rn FROM {self.table(table.ref)}) r "
            f"WHERE rn % {int(every)} = 0 AND v < (SELECT max({column}) FROM "
            f"{self.table(table.ref)}) ORDER BY rn"
        )

    def position(self) -> Query:
        return Query("SELECT CAST(pg_current_snapshot() AS text)")

    def chunk(self, table: TableInfo, lo: str | None, hi: str | None) -> Query:
        where = self.range_predicate(table, lo, hi)
        return Query(
            f"SELECT {self.select_list(table)} FROM {self.table(table.ref)} "  # noqa: S608
            f"WHERE {where.sql} ORDER BY {self.order_by(table)}",
            where.params,
        )

    def _changed_since(self, txid: str) -> str:
        return (
            f"NOT pg_visible_in_snapshot(CAST(CAST({txid} AS text) AS xid8), "
            "CAST(? AS pg_snapshot))"
        )

    def _rows_changed(self, table: TableInfo, since: str) -> Query:
        """The rows written by a transaction the snapshot ``since`` could not see."""
        if table.watermark is None:
            raise ValueError(f"{table.ref.qualified} has no watermark column")
        watermark = self.quote(table.watermark)
        return Query(
            f"{watermark} >= CAST(CAST(pg_snapshot_xmin(CAST(? AS pg_snapshot)) AS text) "
            f"AS bigint) AND {self._changed_since(watermark)}",
            (since, since),
        )

    def _log(self, table: TableInfo) -> str:
        return f"{self.quote(table.ref.schema)}.{self.quote(DELETES_TABLE)}"

    def _logged(self, table: TableInfo, op: str, since: str) -> Query:
        """Log entries of the table of kind ``op`` ('D' delete, 'T' truncate) since ``since``."""
        return Query(
            f"d.table_name = ? AND d.op = '{op}' AND {self._changed_since('d.txid')}",
            (table.ref.name, since),
        )

    def _deleted_key(self, column: Column) -> str:
        """A key column of a logged delete, as its own type."""
        return (
            f"CAST(d.pk ->> '{column.name.replace(chr(39), chr(39) * 2)}' AS {column.source_type})"
        )

    def delta(
        self, table: TableInfo, since: str, lo: str | None = None, hi: str | None = None
    ) -> Query:
        changed = self._rows_changed(table, since)
        in_range = self.range_predicate(table, lo, hi)
        deleted = self._logged(table, "D", since)
        deleted_range = self.range_on(
            self._deleted_key(table.chunk_column), table.chunk_column, lo, hi
        )
        truncated = self._logged(table, "T", since)
        deleted_columns = ", ".join(
            self._read_as(c, self._deleted_key(c))
            if c.name in table.key
            else self._read_as(c, f"CAST(NULL AS {c.source_type})")
            for c in table.columns
        )
        nulls = ", ".join(
            f"{self._read_as(c, f'CAST(NULL AS {c.source_type})')} AS {self.quote(c.name)}"
            for c in table.columns
        )
        sql = (
            f"SELECT 'U' AS _op, {self.select_list(table)} FROM {self.table(table.ref)} "  # noqa: S608
            f"WHERE {changed.sql} AND {in_range.sql} "
            f"UNION ALL SELECT 'D' AS _op, {deleted_columns} FROM {self._log(table)} d "
            f"WHERE {deleted.sql} AND {deleted_range.sql} "
            # A TRUNCATE logs no row: one marker row per chunk, and restore clears the chunk's
            # key range before its upserts (which are the rows as they are now).
            f"UNION ALL SELECT 'T' AS _op, {nulls} WHERE EXISTS (SELECT 1 FROM "
            f"{self._log(table)} d WHERE {truncated.sql})"
        )
        params = (
            changed.params + in_range.params + deleted.params + deleted_range.params
        ) + truncated.params
        return Query(sql, params)

    def delta_boundaries(self, table: TableInfo, since: str, every: int) -> Query:
        column = table.chunk_column
        changed = self._rows_changed(table, since)
        deleted = self._logged(table, "D", since)
        sql = (
            "SELECT CAST(v AS text) FROM (SELECT v, row_number() OVER (ORDER BY v) AS rn, "  # noqa: S608
            f"max(v) OVER () AS top FROM (SELECT {self.quote(column.name)} AS v FROM "
            f"{self.table(table.ref)} WHERE {changed.sql} UNION ALL SELECT "
            f"{self._deleted_key(column)} FROM {self._log(table)} d WHERE {deleted.sql}) c) r "
            f"WHERE rn % {int(every)} = 0 AND v < top ORDER BY rn"
        )
        return Query(sql, changed.params + deleted.params)

    def lob_lengths(self, table: TableInfo, where: Query | None) -> Query:
        lobs = [c for c in table.columns if c.lob]
        # Text-kind values are measured as the text that is read (jsonb, arrays, numeric…
        # have no octet_length of their own); bytea as its bytes.
        select = ", ".join(
            "CAST(COALESCE(max(octet_length("
            + (
                self.quote(c.name)
                if c.lob_kind == "binary"
                else f"CAST({self.quote(c.name)} AS text)"
            )
            + ")), 0) AS bigint)"
            for c in lobs
        )
        predicate = where or Query("1=1")
        sql = f"SELECT {select} FROM {self.table(table.ref)} WHERE {predicate.sql}"  # noqa: S608
        return Query(sql, predicate.params)

    def lob_lengths_delta(
        self, table: TableInfo, since: str, lo: str | None, hi: str | None
    ) -> Query:
        """The largest LOB bytes among the rows a delta chunk since ``since`` will read."""
        changed = self._rows_changed(table, since)
        in_range = self.range_predicate(table, lo, hi)
        return self.lob_lengths(
            table, Query(f"{changed.sql} AND {in_range.sql}", changed.params + in_range.params)
        )

    def install_change_capture(self, ref: TableRef, key: tuple[str, ...]) -> list[str]:
        """DDL that gives a table SQL Server's change features (idempotent)."""
        schema = self.quote(ref.schema)
        table = self.table(ref)
        trigger_base = ref.name.replace('"', "")
        key_args = ", ".join("'" + k.replace("'", "''") + "'" for k in key)
        log = f"{schema}.{DELETES_TABLE}"
        return [
            f"CREATE TABLE IF NOT EXISTS {log} (table_name text NOT NULL, "
            "pk jsonb NOT NULL, txid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
            "deleted_at timestamptz NOT NULL DEFAULT now(), op text NOT NULL DEFAULT 'D')",
            # Logs made before TRUNCATE was captured hold deletes only.
            f"ALTER TABLE {log} ADD COLUMN IF NOT EXISTS op text NOT NULL DEFAULT 'D'",
            f"CREATE OR REPLACE FUNCTION {schema}.indutech_row_version() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "NEW.row_version := CAST(CAST(pg_current_xact_id() AS text) AS bigint); "
            "RETURN NEW; END $$",
            f"CREATE OR REPLACE FUNCTION {schema}.indutech_log_delete() RETURNS trigger "  # noqa: S608 - quoted identifiers
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO {log} (table_name, pk) VALUES (TG_TABLE_NAME, "
            "(SELECT jsonb_object_agg(k, to_jsonb(OLD) -> k) FROM unnest(TG_ARGV) AS k)); "
            "RETURN OLD; END $$",
            # TRUNCATE fires no row trigger: one marker per statement and table, in the
            # truncating transaction (its txid places it among the other changes).
            f"CREATE OR REPLACE FUNCTION {schema}.indutech_log_truncate() RETURNS trigger "  # noqa: S608 - quoted identifiers
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO {log} (table_name, pk, op) VALUES (TG_TABLE_NAME, "
            "CAST('{}' AS jsonb), 'T'); RETURN NULL; END $$",
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS row_version bigint NOT NULL "
            "DEFAULT CAST(CAST(pg_current_xact_id() AS text) AS bigint)",
            f'DROP TRIGGER IF EXISTS "{trigger_base}_row_version" ON {table}',
            f'CREATE TRIGGER "{trigger_base}_row_version" BEFORE INSERT OR UPDATE ON {table} '
            f"FOR EACH ROW EXECUTE FUNCTION {schema}.indutech_row_version()",
            f'DROP TRIGGER IF EXISTS "{trigger_base}_log_delete" ON {table}',
            f'CREATE TRIGGER "{trigger_base}_log_delete" AFTER DELETE ON {table} '
            f"FOR EACH ROW EXECUTE FUNCTION {schema}.indutech_log_delete({key_args})",
            f'DROP TRIGGER IF EXISTS "{trigger_base}_log_truncate" ON {table}',
            f'CREATE TRIGGER "{trigger_base}_log_truncate" AFTER TRUNCATE ON {table} '
            f"FOR EACH STATEMENT EXECUTE FUNCTION {schema}.indutech_log_truncate()",
        ]
