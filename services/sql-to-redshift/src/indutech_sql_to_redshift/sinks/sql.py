# ruff: noqa: S608 - SQL built from identifiers checked against IDENTIFIER, never outside input
"""The SQL of the raw side: the load ledger and the staging and MERGE of ``erp_raw``.

Tables (``raw_schema``, ``erp_raw`` in production):

- ``_load_state``: one row per source table, the *head*: the last night applied and the
  source position it ended at. A night's transaction moves it with a compare-and-set
  (``UPDATE … WHERE position_to = expected``), so two loaders of one table cannot both
  apply a night: one of them updates nothing and rolls back.
- ``_load_ledger``: one row per (table, day, kind) applied, in order: the manifest, the
  positions, the rows in the backup and in the table afterwards, when and how long.
- ``<table>``: the table as of the head, with the source's columns and key.

A night is applied in one transaction: lock the table's head, check it, fill the table
(a full or re-snapshot replaces it) or stage the delta's parts in a temporary table and
apply them (a truncate marker ``T`` clears its chunk's key range, deletes ``D`` go, then
one ``MERGE`` of the upserts ``U``), refresh the models that read the table, then write
the ledger and move the head. Written once in PostgreSQL (``dialect.render`` gives
Redshift); the load itself differs: binary COPY locally, ``COPY … FORMAT AS PARQUET`` with
a manifest file on Redshift.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from indutech_common.schemas.sql_backup import CHANGE_OP_COLUMN
from indutech_sql_to_redshift.config import IAM_ROLE, IDENTIFIER
from indutech_sql_to_redshift.dialect import Dialect, Layout, render
from indutech_sql_to_redshift.errors import SchemaDriftError

STATE = "_load_state"
LEDGER = "_load_ledger"
STAGE_PREFIX = "s2r_stage_"
# What may be interpolated into Redshift's COPY (it takes no parameters there).
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,62}/[A-Za-z0-9/_.+=-]+$")


def sql_type(arrow_type: pa.DataType) -> str:
    """The warehouse type (PostgreSQL spelling) that holds a stored Arrow type exactly."""
    fixed = {
        pa.int8(): "SMALLINT",
        pa.int16(): "SMALLINT",
        pa.uint8(): "SMALLINT",
        pa.int32(): "INTEGER",
        pa.uint16(): "INTEGER",
        pa.int64(): "BIGINT",
        pa.uint32(): "BIGINT",
        pa.float32(): "REAL",
        pa.float64(): "DOUBLE PRECISION",
        pa.bool_(): "BOOLEAN",
        pa.date32(): "DATE",
        pa.string(): "TEXT",
        pa.large_string(): "TEXT",
        pa.binary(): "BYTEA",
        pa.large_binary(): "BYTEA",
    }
    if arrow_type in fixed:
        return fixed[arrow_type]
    if pa.types.is_dictionary(arrow_type):
        return sql_type(arrow_type.value_type)
    if pa.types.is_decimal(arrow_type):
        return f"NUMERIC({arrow_type.precision}, {arrow_type.scale})"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_time(arrow_type):
        return "TIME"
    raise SchemaDriftError(
        f"no warehouse type holds the stored Arrow type {arrow_type} exactly; tell the "
        "sql-to-redshift maintainers which source type this is."
    )


@dataclass(frozen=True)
class RawTable:
    """A staged table's shape: its columns (name, warehouse type, nullable) and key."""

    name: str
    columns: tuple[tuple[str, str, bool], ...]
    key: tuple[str, ...]

    @classmethod
    def of(
        cls, name: str, schema: pa.Schema, key: Sequence[str], nullable: dict[str, bool]
    ) -> RawTable:
        columns = []
        for field in schema:
            if field.name == CHANGE_OP_COLUMN:
                continue
            if not IDENTIFIER.match(field.name):
                raise SchemaDriftError(
                    f"{name}.{field.name}: only lower-case column names are staged (letters, "
                    "digits, _); rename the column at the source or add a mapping."
                )
            columns.append((field.name, sql_type(field.type), nullable.get(field.name, True)))
        return cls(name, tuple(columns), tuple(key))

    @property
    def signature(self) -> str:
        """The columns and key as one string: what the head records and a delta must match."""
        columns = ", ".join(f"{n} {t}{'' if null else ' NOT NULL'}" for n, t, null in self.columns)
        return f"{columns}; key {', '.join(self.key)}"

    @property
    def money(self) -> tuple[str, ...]:
        """The decimal columns: the money totals reconciled after each night."""
        return tuple(c for c, t, _ in self.columns if t.startswith("NUMERIC"))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c for c, _, _ in self.columns)

    def type_of(self, column: str) -> str:
        return next(t for c, t, _ in self.columns if c == column)


class Statements:
    """Every statement of the raw side, for one raw schema and one dialect."""

    def __init__(self, raw_schema: str, dialect: Dialect) -> None:
        if not IDENTIFIER.match(raw_schema):
            raise ValueError(f"{raw_schema!r} is not a lower-case SQL identifier")
        self.schema = raw_schema
        self.dialect = dialect

    def _r(self, sql: str, layout: Layout | None = None) -> str:
        return render(sql, self.dialect, layout)

    def table(self, name: str) -> str:
        if not IDENTIFIER.match(name):
            raise ValueError(f"{name!r} is not a lower-case SQL identifier")
        return f"{self.schema}.{name}"

    # -- the ledger ----------------------------------------------------------------------

    def create_ledger(self) -> list[str]:
        return [
            self._r(f"CREATE SCHEMA IF NOT EXISTS {self.schema}"),
            self._r(
                f"CREATE TABLE IF NOT EXISTS {self.schema}.{STATE} ("
                "source_table VARCHAR(128) NOT NULL, day DATE NOT NULL, "
                "kind VARCHAR(8) NOT NULL, position_to VARCHAR(256) NOT NULL, "
                "manifest VARCHAR(1024) NOT NULL, columns VARCHAR(65535) NOT NULL, "
                "updated_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (source_table))",
                Layout(diststyle_all=True),
            ),
            self._r(
                f"CREATE TABLE IF NOT EXISTS {self.schema}.{LEDGER} ("
                "source_table VARCHAR(128) NOT NULL, day DATE NOT NULL, "
                "kind VARCHAR(8) NOT NULL, snapshot BOOLEAN NOT NULL, "
                "manifest VARCHAR(1024) NOT NULL, position_from VARCHAR(256), "
                "position_to VARCHAR(256) NOT NULL, backup_rows BIGINT NOT NULL, "
                "table_rows BIGINT NOT NULL, totals VARCHAR(65535) NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL, "
                "seconds DOUBLE PRECISION NOT NULL, PRIMARY KEY (source_table, day, kind))",
                Layout(diststyle_all=True, sortkey=("source_table", "day")),
            ),
        ]

    def lock(self) -> str:
        """Serialises the loaders of one table ($1: the table) until the transaction ends.
        Redshift has no advisory locks: it locks the state table (all tables, briefly)."""
        if self.dialect == "redshift":
            return f"LOCK {self.schema}.{STATE}"
        return "SELECT pg_advisory_xact_lock(hashtext($1))"

    def lock_args(self, name: str) -> tuple[str, ...]:
        """The arguments of ``lock()`` for table ``name`` (Redshift's LOCK takes none)."""
        return () if self.dialect == "redshift" else (f"{self.schema}.{name}",)

    def select_head(self) -> str:
        return self._r(
            "SELECT day, kind, position_to, manifest, columns "
            f"FROM {self.schema}.{STATE} WHERE source_table = $1"
        )

    def select_heads(self) -> str:
        return self._r(
            "SELECT source_table, day, kind, position_to, manifest, columns "
            f"FROM {self.schema}.{STATE} ORDER BY source_table"
        )

    def advance_head(self) -> str:
        """Compare-and-set: $1 table, $2 expected position_to, $3 day, $4 kind, $5 new
        position_to, $6 manifest, $7 now, $8 columns. ``UPDATE 0``: another loader moved it
        (fenced)."""
        return self._r(
            f"UPDATE {self.schema}.{STATE} SET day = CAST($3 AS DATE), "
            "kind = CAST($4 AS VARCHAR(8)), position_to = CAST($5 AS VARCHAR(256)), "
            "manifest = CAST($6 AS VARCHAR(1024)), updated_at = CAST($7 AS TIMESTAMPTZ), "
            "columns = CAST($8 AS VARCHAR(65535)) "
            "WHERE source_table = CAST($1 AS VARCHAR(128)) "
            "AND position_to = CAST($2 AS VARCHAR(256))"
        )

    def insert_head(self) -> str:
        """The first night of a table: inserts only when no head exists ($1 table, $2 day,
        $3 kind, $4 position_to, $5 manifest, $6 now, $7 columns). ``INSERT 0 0``: fenced."""
        return self._r(
            f"INSERT INTO {self.schema}.{STATE} "
            "(source_table, day, kind, position_to, manifest, columns, updated_at) "
            "SELECT CAST($1 AS VARCHAR(128)), CAST($2 AS DATE), CAST($3 AS VARCHAR(8)), "
            "CAST($4 AS VARCHAR(256)), CAST($5 AS VARCHAR(1024)), CAST($7 AS VARCHAR(65535)), "
            "CAST($6 AS TIMESTAMPTZ) "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.schema}.{STATE} "
            "WHERE source_table = CAST($1 AS VARCHAR(128)))"
        )

    def insert_ledger(self) -> str:
        return self._r(
            f"INSERT INTO {self.schema}.{LEDGER} (source_table, day, kind, snapshot, manifest, "
            "position_from, position_to, backup_rows, table_rows, applied_at, seconds, totals) "
            "VALUES (CAST($1 AS VARCHAR(128)), CAST($2 AS DATE), CAST($3 AS VARCHAR(8)), "
            "CAST($4 AS BOOLEAN), CAST($5 AS VARCHAR(1024)), CAST($6 AS VARCHAR(256)), "
            "CAST($7 AS VARCHAR(256)), CAST($8 AS BIGINT), CAST($9 AS BIGINT), "
            "CAST($10 AS TIMESTAMPTZ), CAST($11 AS DOUBLE PRECISION), CAST($12 AS VARCHAR(65535)))"
        )

    def select_ledger(self) -> str:
        return self._r(
            "SELECT source_table, day, kind, snapshot, manifest, backup_rows, table_rows, totals "
            f"FROM {self.schema}.{LEDGER} ORDER BY source_table, day, kind"
        )

    def forget(self) -> list[str]:
        """Rebuild: the ledger and heads of one table ($1)."""
        return [
            self._r(f"DELETE FROM {self.schema}.{STATE} WHERE source_table = $1"),
            self._r(f"DELETE FROM {self.schema}.{LEDGER} WHERE source_table = $1"),
        ]

    # -- the staged tables ---------------------------------------------------------------

    def create_table(self, raw: RawTable) -> str:
        columns = ", ".join(
            f"{name} {type_}{'' if nullable else ' NOT NULL'}"
            for name, type_, nullable in raw.columns
        )
        key = ", ".join(raw.key)
        return self._r(
            f"CREATE TABLE {self.table(raw.name)} ({columns}, PRIMARY KEY ({key}))",
            Layout(distkey=raw.key[0], sortkey=raw.key),
        )

    def drop_table(self, name: str) -> str:
        return self._r(f"DROP TABLE IF EXISTS {self.table(name)}")

    def empty_table(self, name: str) -> str:
        # DELETE, not TRUNCATE: Redshift's TRUNCATE commits the transaction it runs in.
        return self._r(f"DELETE FROM {self.table(name)}")

    def totals(self, raw: RawTable) -> str:
        """Rows and the sum of every decimal column of the staged table."""
        sums = "".join(f", SUM({c})" for c in raw.money)
        return self._r(f"SELECT COUNT(*){sums} FROM {self.table(raw.name)}")

    def upserted_totals(self, raw: RawTable) -> str:
        """After the MERGE: rows and sums of the staged table's rows with the stage's keys."""
        table = self.table(raw.name)
        stage = self.stage(raw.name)
        sums = "".join(f", SUM(t.{c})" for c in raw.money)
        return self._r(
            f"SELECT COUNT(*){sums} FROM {table} AS t JOIN {stage} AS s ON "
            + " AND ".join(f"t.{k} = s.{k}" for k in raw.key)
        )

    def count(self, name: str) -> str:
        return self._r(f"SELECT COUNT(*) FROM {self.table(name)}")

    @staticmethod
    def stage(name: str) -> str:
        """A temporary table per source table: a statement cached for one table's stage is
        never run against another's (asyncpg caches prepared statements by their text)."""
        return f"{STAGE_PREFIX}{name}"[:63]

    def create_stage(self, raw: RawTable) -> str:
        """The delta's parts as they are: ``_op``, then the columns (Redshift's COPY of
        Parquet fills a table with exactly the file's columns, in order)."""
        stage = self.stage(raw.name)
        columns = ", ".join(f"{name} {type_}" for name, type_, _ in raw.columns)
        return self._r(f"CREATE TEMPORARY TABLE {stage} (_op VARCHAR(1) NOT NULL, {columns})")

    def drop_stage(self, raw: RawTable) -> str:
        stage = self.stage(raw.name)
        return self._r(f"DROP TABLE {stage}")

    def clear_range(self, raw: RawTable, column: str, *, lo: bool, hi: bool) -> str:
        """A truncate marker: every row of its chunk's key range ($1 lo exclusive, $2 hi
        inclusive, as text; the bounds that are None are left out)."""
        cast = f"CAST(CAST(${{}} AS TEXT) AS {raw.type_of(column)})"
        bounds = []
        if lo:
            bounds.append(f"{column} > {cast.format(1)}")
        if hi:
            bounds.append(f"{column} <= {cast.format(2 if lo else 1)}")
        where = " AND ".join(bounds) or "TRUE"
        return self._r(f"DELETE FROM {self.table(raw.name)} WHERE {where}")

    def _match(self, raw: RawTable, target: str, source: str) -> str:
        return " AND ".join(f"{target}.{k} = {source}.{k}" for k in raw.key)

    def apply_delta(self, raw: RawTable) -> list[str]:
        """After the truncate markers: the stage's deletes go, leaving its upserts for
        ``merge``. A key deleted and inserted again the same night is in the stage twice
        (``D`` from the deletes log, ``U`` with its row): the ``U`` wins, as on restore."""
        table = self.table(raw.name)
        stage = self.stage(raw.name)
        return [
            self._r(
                f"DELETE FROM {stage} USING {stage} AS u WHERE {stage}._op = 'D' "
                f"AND u._op = 'U' AND {self._match(raw, 'u', stage)}"
            ),
            self._r(
                f"DELETE FROM {table} USING {stage} AS s WHERE s._op = 'D' "
                f"AND {self._match(raw, table, 's')}"
            ),
            self._r(f"DELETE FROM {stage} WHERE _op <> 'U'"),
        ]

    def merge(self, raw: RawTable) -> str:
        table = self.table(raw.name)
        stage = self.stage(raw.name)
        non_key = [c for c in raw.names if c not in raw.key] or [raw.key[0]]
        updates = ", ".join(f"{c} = s.{c}" for c in non_key)
        values = ", ".join(f"s.{c}" for c in raw.names)
        return self._r(
            f"MERGE INTO {table} USING {stage} AS s ON {self._match(raw, table, 's')} "
            f"WHEN MATCHED THEN UPDATE SET {updates} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(raw.names)}) VALUES ({values})"
        )

    def duplicate_key(self, raw: RawTable) -> str:
        """A key the stage's upserts hold twice (a broken backup): PostgreSQL's MERGE would
        fail on it and Redshift's insert it twice, so it is refused before the MERGE."""
        keys = ", ".join(raw.key)
        stage = self.stage(raw.name)
        return self._r(f"SELECT {keys} FROM {stage} GROUP BY {keys} HAVING COUNT(*) > 1 LIMIT 1")

    def rs_copy_manifest(self, target: str, *, manifest_uri: str, iam_role: str) -> str:
        """Redshift: load the parts a COPY manifest lists (``FORMAT AS PARQUET``)."""
        if not S3_URI.match(manifest_uri):
            raise ValueError(f"{manifest_uri!r} is not an s3:// URI")
        if not IAM_ROLE.match(iam_role):
            raise ValueError(f"{iam_role!r} is not an IAM role ARN")
        return (
            f"COPY {target} FROM '{manifest_uri}' IAM_ROLE '{iam_role}' FORMAT AS PARQUET MANIFEST"
        )
