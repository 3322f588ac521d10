"""The warehouse SQL of iot-aggregator, rendered per dialect by one piece of code.

Tables (in the configured schema, ``rt`` in production):

- ``ticket_aggregates_partial`` and ``reading_aggregates_partial``: one row per
  (window, group, source topic, source partition); every measure is mergeable
  (counts and sums add, minimums and maximums combine), so a write *adds* a
  delta to the row and the views add the partitions up.
- ``consumer_offsets``: per (consumer group, topic, partition) the next offset
  to read, the partition's watermark and the first window start still open.
  It is written in the same transaction as the deltas, with a compare-and-set
  on ``next_offset``: that is what makes the delivery exactly-once in effect.
- Views ``ticket_aggregates`` (average latency = sum / count) and
  ``reading_aggregates`` combine the partitions; ``final`` is true once every
  contributing partition closed the window.

PostgreSQL (local): binary COPY of the deltas into a temporary staging table,
then ``INSERT … ON CONFLICT DO UPDATE``. Redshift (production) has no COPY FROM
STDIN: the deltas go to S3 as Parquet, ``COPY … FORMAT AS PARQUET`` into a
staging table, then ``MERGE``. No Redshift runs here: its rendering is checked
as SQL text (sqlglot's Redshift dialect) in the unit tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["postgres", "redshift"]
# Only identifiers are interpolated into the SQL: the schema is checked against this.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# What may be interpolated into Redshift's COPY (it takes no parameters there).
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,62}/[A-Za-z0-9/_.+=-]+$")
IAM_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]+$")


@dataclass(frozen=True)
class Measure:
    name: str
    sql_type: str
    merge: Literal["add", "least", "greatest"]


@dataclass(frozen=True)
class AggregateTable:
    """One partial-aggregate table and the view that combines its partitions."""

    name: str
    view: str
    group: tuple[tuple[str, str], ...]  # (column, type)
    measures: tuple[Measure, ...]
    averages: tuple[tuple[str, str, str], ...]  # (view column, sum column, count column)

    @property
    def key(self) -> tuple[str, ...]:
        return ("window_start", "window_end", *(c for c, _ in self.group), *SOURCE)

    @property
    def columns(self) -> tuple[str, ...]:
        """The staging/COPY column order (what the sink's rows hold)."""
        return (*self.key, *(m.name for m in self.measures), "final", "updated_at")


SOURCE = ("source_topic", "source_partition")
TEXT = "VARCHAR(256)"
# Redshift counts VARCHAR in bytes: 256 characters (the contract's limit) of up to 4 bytes.
REDSHIFT_TEXT = "VARCHAR(1024)"

TICKETS = AggregateTable(
    name="ticket_aggregates_partial",
    view="ticket_aggregates",
    group=(("customer_id", TEXT), ("region", TEXT)),
    measures=(
        Measure("ticket_count", "BIGINT", "add"),
        Measure("revenue_sum", "NUMERIC(38, 2)", "add"),
        Measure("latency_sum_ms", "BIGINT", "add"),
        Measure("latency_count", "BIGINT", "add"),
        Measure("latency_min_ms", "BIGINT", "least"),
        Measure("latency_max_ms", "BIGINT", "greatest"),
        Measure("late_events", "BIGINT", "add"),
    ),
    averages=(("latency_avg_ms", "latency_sum_ms", "latency_count"),),
)
READINGS = AggregateTable(
    name="reading_aggregates_partial",
    view="reading_aggregates",
    group=(("sensor_id", TEXT), ("site", TEXT), ("metric", TEXT)),
    measures=(
        Measure("reading_count", "BIGINT", "add"),
        Measure("value_sum", "DOUBLE PRECISION", "add"),
        Measure("value_min", "DOUBLE PRECISION", "least"),
        Measure("value_max", "DOUBLE PRECISION", "greatest"),
        Measure("late_events", "BIGINT", "add"),
    ),
    averages=(("value_avg", "value_sum", "reading_count"),),
)
TABLES = (TICKETS, READINGS)
OFFSETS = "consumer_offsets"


def _merged(measure: Measure, target: str, source: str) -> str:
    name = measure.name
    if measure.merge == "add":
        return f"{name} = {target}.{name} + {source}.{name}"
    function = "LEAST" if measure.merge == "least" else "GREATEST"
    return f"{name} = {function}({target}.{name}, {source}.{name})"


def _view_column(measure: Measure) -> str:
    function = {"add": "SUM", "least": "MIN", "greatest": "MAX"}[measure.merge]
    return f"{function}({measure.name}) AS {measure.name}"


class Statements:
    """Every statement of the sink, for one schema and one dialect."""

    def __init__(self, schema: str, dialect: Dialect) -> None:
        if not IDENTIFIER.match(schema):
            raise ValueError(f"{schema!r} is not a lower-case SQL identifier")
        self.schema = schema
        self.dialect = dialect

    def table(self, table: AggregateTable) -> str:
        return f"{self.schema}.{table.name}"

    def stage(self, table: AggregateTable) -> str:
        # A temporary table is private to its session: no clash between replicas.
        return f"stage_{self.schema}_{table.name}"

    @property
    def offsets(self) -> str:
        return f"{self.schema}.{OFFSETS}"

    def _type(self, sql_type: str) -> str:
        return REDSHIFT_TEXT if sql_type == TEXT and self.dialect == "redshift" else sql_type

    # -- schema ------------------------------------------------------------------------------

    def create_schema(self) -> list[str]:
        """Idempotent DDL: schema, tables, views (re-created with the same definition)."""
        statements = [f"CREATE SCHEMA IF NOT EXISTS {self.schema}"]
        for table in TABLES:
            columns = [
                "window_start TIMESTAMPTZ NOT NULL",
                "window_end TIMESTAMPTZ NOT NULL",
                *(f"{name} {self._type(sql_type)} NOT NULL" for name, sql_type in table.group),
                f"source_topic {self._type(TEXT)} NOT NULL",
                "source_partition INTEGER NOT NULL",
                *(f"{m.name} {m.sql_type} NOT NULL" for m in table.measures),
                "final BOOLEAN NOT NULL",
                "updated_at TIMESTAMPTZ NOT NULL",
                f"PRIMARY KEY ({', '.join(table.key)})",
            ]
            body = ",\n  ".join(columns)
            # Redshift: rows of one window sit together (sort key) for the views' GROUP BY.
            suffix = " SORTKEY (window_start)" if self.dialect == "redshift" else ""
            statements.append(
                f"CREATE TABLE IF NOT EXISTS {self.table(table)} (\n  {body}\n){suffix}"
            )
            statements.append(self.create_view(table))
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {self.offsets} (\n"
            f"  consumer_group {self._type(TEXT)} NOT NULL,\n"
            f"  topic {self._type(TEXT)} NOT NULL,\n"
            "  source_partition INTEGER NOT NULL,\n"
            "  next_offset BIGINT NOT NULL,\n"
            "  watermark TIMESTAMPTZ,\n"
            "  closed_before TIMESTAMPTZ,\n"
            "  updated_at TIMESTAMPTZ NOT NULL,\n"
            "  PRIMARY KEY (consumer_group, topic, source_partition)\n)"
        )
        return statements

    def create_view(self, table: AggregateTable) -> str:
        group = ["window_start", "window_end", *(c for c, _ in table.group)]
        averages = [
            f"CAST(SUM({total}) AS NUMERIC(38, 6)) / NULLIF(SUM({count}), 0) AS {name}"
            for name, total, count in table.averages
        ]
        columns = [
            *group,
            *(_view_column(m) for m in table.measures),
            *averages,
            "BOOL_AND(final) AS final",
            "COUNT(*) AS partitions",
            "MAX(updated_at) AS updated_at",
        ]
        return (
            f"CREATE OR REPLACE VIEW {self.schema}.{table.view} AS SELECT "  # noqa: S608 - identifiers only
            + ", ".join(columns)
            + f" FROM {self.table(table)} GROUP BY {', '.join(group)}"
        )

    # -- offsets -----------------------------------------------------------------------------

    def select_offsets(self, topics: int, *, lock: bool = False) -> str:
        """The group's positions in ``$2 …`` (one parameter per topic; Redshift has no
        arrays). ``lock``: held until the transaction ends (PostgreSQL; Redshift locks the
        table with ``rs_lock_offsets`` instead)."""
        names = ", ".join(f"${i}" for i in range(2, topics + 2))
        locking = " FOR UPDATE" if lock and self.dialect == "postgres" else ""
        return (
            "SELECT topic, source_partition, next_offset, watermark, closed_before "  # noqa: S608 - identifiers only
            f"FROM {self.offsets} WHERE consumer_group = $1 AND topic IN ({names}) "
            f"ORDER BY topic, source_partition{locking}"
        )

    def pg_delete_range(self, table: AggregateTable) -> str:
        """The rows of windows starting in ``[$1, $2)`` of the partitions named in $3/$4."""
        return (
            f"DELETE FROM {self.table(table)} AS t "  # noqa: S608 - identifiers only
            "USING unnest($3::text[], $4::int[]) AS c(topic, part) "
            "WHERE t.window_start >= $1 AND t.window_start < $2 "
            "AND t.source_topic = c.topic AND t.source_partition = c.part"
        )

    # -- the write transaction: PostgreSQL ---------------------------------------------------

    def pg_create_stage(self, table: AggregateTable) -> str:
        return (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {self.stage(table)} "
            f"(LIKE {self.table(table)}) ON COMMIT DELETE ROWS"
        )

    def pg_upsert(self, table: AggregateTable) -> str:
        columns = ", ".join(table.columns)
        updates = [_merged(m, "t", "EXCLUDED") for m in table.measures]
        updates += ["final = t.final OR EXCLUDED.final", "updated_at = EXCLUDED.updated_at"]
        return (
            f"INSERT INTO {self.table(table)} AS t ({columns}) "  # noqa: S608 - identifiers only
            f"SELECT {columns} FROM {self.stage(table)} "
            f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {', '.join(updates)}"
        )

    def pg_finalize(self, table: AggregateTable) -> str:
        """Mark final the rows of windows the batch's partitions closed (arrays per partition)."""
        return (
            f"UPDATE {self.table(table)} AS t SET final = TRUE, updated_at = $4 "  # noqa: S608 - identifiers only
            "FROM unnest($1::text[], $2::int[], $3::timestamptz[], $5::timestamptz[]) "
            "AS c(topic, part, closed, previous) "
            "WHERE t.source_topic = c.topic AND t.source_partition = c.part "
            # the range since the partition's last close: rows before it are final already
            "AND t.window_start >= c.previous AND t.window_start < c.closed AND NOT t.final"
        )

    def pg_advance_offsets(self) -> str:
        """Compare-and-set of every partition's offsets; returns the partitions it moved."""
        return (
            f"UPDATE {self.offsets} AS o SET next_offset = c.next_offset, "  # noqa: S608 - identifiers only
            "watermark = c.watermark, closed_before = c.closed, updated_at = $8 "
            "FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[], "
            "$6::timestamptz[], $7::timestamptz[]) "
            "AS c(topic, part, expected, next_offset, watermark, closed) "
            "WHERE o.consumer_group = $1 AND o.topic = c.topic AND o.source_partition = c.part "
            "AND o.next_offset = c.expected RETURNING o.topic, o.source_partition"
        )

    def pg_insert_offsets(self) -> str:
        """First write of a partition: inserts only where no row exists yet."""
        return (
            f"INSERT INTO {self.offsets} (consumer_group, topic, source_partition, next_offset, "  # noqa: S608 - identifiers only
            "watermark, closed_before, updated_at) "
            "SELECT $1, c.topic, c.part, c.next_offset, c.watermark, c.closed, $7 "
            "FROM unnest($2::text[], $3::int[], $4::bigint[], $5::timestamptz[], "
            "$6::timestamptz[]) AS c(topic, part, next_offset, watermark, closed) "
            "ON CONFLICT (consumer_group, topic, source_partition) DO NOTHING "
            "RETURNING topic, source_partition"
        )

    # -- the write transaction: Redshift -----------------------------------------------------
    # One statement per partition where PostgreSQL takes arrays (Redshift has none); each
    # statement takes exactly the parameters it uses, cast, so that PostgreSQL (15 has MERGE)
    # can run them too: the tests run this rendering on the real PostgreSQL engine.

    def rs_create_stage(self, table: AggregateTable) -> str:
        return f"CREATE TEMPORARY TABLE {self.stage(table)} (LIKE {self.table(table)})"

    def rs_copy_stage(self, table: AggregateTable, *, uri: str, iam_role: str) -> str:
        """Load the staged Parquet file of the deltas (written under warehouse-staging/)."""
        if not S3_URI.match(uri):
            raise ValueError(f"{uri!r} is not an s3:// URI of the staging prefix")
        if not IAM_ROLE.match(iam_role):
            raise ValueError(f"{iam_role!r} is not an IAM role ARN")
        return f"COPY {self.stage(table)} FROM '{uri}' IAM_ROLE '{iam_role}' FORMAT AS PARQUET"

    def rs_merge(self, table: AggregateTable) -> str:
        """MERGE as Redshift takes it: no alias on the target, bare column names in SET."""
        target = self.table(table)
        stage = self.stage(table)
        on = " AND ".join(f"{target}.{c} = s.{c}" for c in table.key)
        updates = [_merged(m, target, "s") for m in table.measures]
        updates += [f"final = {target}.final OR s.final", "updated_at = s.updated_at"]
        columns = ", ".join(table.columns)
        values = ", ".join(f"s.{c}" for c in table.columns)
        return (
            f"MERGE INTO {target} USING {stage} AS s ON {on} "  # noqa: S608 - identifiers only
            f"WHEN MATCHED THEN UPDATE SET {', '.join(updates)} "
            f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})"
        )

    def rs_drop_stage(self, table: AggregateTable) -> str:
        return f"DROP TABLE {self.stage(table)}"

    def rs_finalize(self, table: AggregateTable) -> str:
        """One partition: $1 topic, $2 partition, $3 closed_before, $4 now, $5 previous close."""
        return (
            f"UPDATE {self.table(table)} SET final = TRUE, updated_at = $4::TIMESTAMPTZ "  # noqa: S608 - identifiers only
            "WHERE source_topic = $1::VARCHAR AND source_partition = $2::INTEGER "
            "AND window_start >= $5::TIMESTAMPTZ AND window_start < $3::TIMESTAMPTZ "
            "AND NOT final"
        )

    def rs_advance_offset(self) -> str:
        """One partition's compare-and-set: $1 group, $2 topic, $3 partition, $4 expected,
        $5 next offset, $6 watermark, $7 closed_before, $8 now. ``UPDATE 0``: fenced."""
        return (
            f"UPDATE {self.offsets} SET next_offset = $5::BIGINT, "  # noqa: S608 - identifiers only
            "watermark = $6::TIMESTAMPTZ, closed_before = $7::TIMESTAMPTZ, "
            "updated_at = $8::TIMESTAMPTZ WHERE consumer_group = $1::VARCHAR "
            "AND topic = $2::VARCHAR AND source_partition = $3::INTEGER "
            "AND next_offset = $4::BIGINT"
        )

    def rs_insert_offset(self) -> str:
        """A partition's first write: $1 group, $2 topic, $3 partition, $4 next offset,
        $5 watermark, $6 closed_before, $7 now. ``INSERT 0 0``: another member was first."""
        return (
            f"INSERT INTO {self.offsets} (consumer_group, topic, source_partition, next_offset, "  # noqa: S608 - identifiers only
            "watermark, closed_before, updated_at) SELECT $1::VARCHAR, $2::VARCHAR, "
            "$3::INTEGER, $4::BIGINT, $5::TIMESTAMPTZ, $6::TIMESTAMPTZ, $7::TIMESTAMPTZ "
            f"WHERE NOT EXISTS (SELECT 1 FROM {self.offsets} WHERE consumer_group = $1::VARCHAR "
            "AND topic = $2::VARCHAR AND source_partition = $3::INTEGER)"
        )

    def rs_lock_offsets(self) -> str:
        """Rebuild: the stream's writes wait until the rebuild commits."""
        return f"LOCK {self.offsets}"

    def rs_delete_range(self, table: AggregateTable) -> str:
        """One partition's rows of windows in ``[$1, $2)``: $3 topic, $4 partition."""
        return (
            f"DELETE FROM {self.table(table)} WHERE window_start >= $1::TIMESTAMPTZ "  # noqa: S608 - identifiers only
            "AND window_start < $2::TIMESTAMPTZ AND source_topic = $3::VARCHAR "
            "AND source_partition = $4::INTEGER"
        )
