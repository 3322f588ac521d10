"""The warehouse sink on the real PostgreSQL: deltas add up, the offsets compare-and-set refuses
a zombie's or a retried batch whole, and the schema is created idempotently."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from indutech_common.s3 import create_s3_client
from indutech_common.warehouse import connect_warehouse, create_warehouse_pool
from indutech_devtools.iam import moved_policy
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_aggregator.errors import FencedError
from indutech_iot_aggregator.sinks import (
    CopyStager,
    RedshiftSink,
    S3ParquetStager,
    Statements,
    WarehouseBatch,
    WarehouseSink,
    open_sink,
)
from indutech_iot_aggregator.sinks.sql import AggregateTable
from indutech_iot_aggregator.windows import Committed, PartitionWindows, WindowSpec, to_us
from tests.integration.iot_aggregator.conftest import BASE_TIME, fetch
from tests.support.iam import assume_role, assume_worker_role, s3_client_as, use_credentials
from tests.support.s3 import delete_prefix, list_keys
from tests.support.stack import StackSettings

SPEC = WindowSpec.of(size_s=60, grace_s=5)
T0 = to_us(BASE_TIME)
GROUP = "test-group"


@pytest.fixture
async def postgres_sink(stack: StackSettings, unique: str) -> AsyncIterator[WarehouseSink]:
    """The PostgreSQL sink on a fresh, migrated schema (dropped after)."""
    schema = f"test_sink_{unique}"
    opened = await open_sink(stack.warehouse, schema=schema)
    try:
        await opened.migrate()
        yield opened
    finally:
        await opened.close()
        connection = await connect_warehouse(stack.warehouse)
        try:
            await connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await connection.close()


@pytest.fixture(params=["postgres", "redshift-sql-on-postgres"])
async def sink(
    request: pytest.FixtureRequest, stack: StackSettings, postgres_sink: WarehouseSink
) -> AsyncIterator[WarehouseSink]:
    """The PostgreSQL sink; and the Redshift sink's statements (MERGE, one compare-and-set
    per partition, LOCK) run on PostgreSQL 15, with the staging table filled by COPY from
    this process instead of COPY from S3, the one statement PostgreSQL lacks."""
    if request.param == "postgres":
        yield postgres_sink
        return
    pool = await create_warehouse_pool(stack.warehouse, min_size=1, max_size=2)
    redshift = RedshiftSink(pool, Statements(postgres_sink.schema, "redshift"), CopyStager())
    try:
        yield redshift
    finally:
        await redshift.close()


def partition(
    number: int, committed: Committed, offsets: range, revenue: str = "1.25"
) -> PartitionWindows:
    windows = PartitionWindows(f"tickets-{number}", 0, SPEC, "correction", committed=committed)
    for offset in offsets:
        windows.add_ticket(
            offset,
            event_us=T0 + offset,
            customer_id="c1",
            region="emea",
            revenue=Decimal(revenue),
            latency_ms=offset,
        )
    return windows


def batch(*windows: PartitionWindows) -> WarehouseBatch:
    parts = [b for w in windows if (b := w.batch()) is not None]
    return WarehouseBatch(GROUP, SPEC.size_us, parts)


async def totals(stack: StackSettings, sink: WarehouseSink) -> list[tuple[str, int, Decimal]]:
    rows = await fetch(
        stack,
        sink.schema,
        "SELECT source_topic, ticket_count, revenue_sum FROM ticket_aggregates_partial "
        "ORDER BY source_topic",
    )
    return [(r["source_topic"], r["ticket_count"], r["revenue_sum"]) for r in rows]


class TestCompareAndSet:
    async def test_deltas_add_up_across_batches(
        self, stack: StackSettings, sink: WarehouseSink
    ) -> None:
        """Two batches of one window: the row holds their sum, the offsets the end."""
        first = partition(0, Committed(), range(3))
        written = batch(first)
        await sink.write(written)
        first.written(written.partitions[0])
        for offset in range(3, 5):
            first.add_ticket(
                offset,
                event_us=T0 + offset,
                customer_id="c1",
                region="emea",
                revenue=Decimal("1.25"),
                latency_ms=offset,
            )
        await sink.write(batch(first))
        assert await totals(stack, sink) == [("tickets-0", 5, Decimal("6.25"))]
        offsets = await sink.load_offsets(GROUP, ["tickets-0"])
        assert offsets[("tickets-0", 0)].next_offset == 5

    async def test_a_batch_written_twice_is_refused_the_second_time(
        self, stack: StackSettings, sink: WarehouseSink
    ) -> None:
        """A retry after a lost acknowledgement (or a zombie's write from the same offset)
        raises FencedError and adds nothing."""
        await sink.write(batch(partition(0, Committed(), range(4))))
        with pytest.raises(FencedError) as raised:
            await sink.write(batch(partition(0, Committed(), range(4))))
        assert raised.value.partitions == [("tickets-0", 0)]
        later = Committed(next_offset=4)
        await sink.write(batch(partition(0, later, range(4, 6))))
        with pytest.raises(FencedError):
            await sink.write(batch(partition(0, later, range(4, 6))))
        assert await totals(stack, sink) == [("tickets-0", 6, Decimal("7.50"))]

    async def test_one_stale_partition_rolls_the_whole_batch_back(
        self, stack: StackSettings, sink: WarehouseSink
    ) -> None:
        """The deltas of a good partition are not applied when another partition of the same
        transaction is fenced: one transaction, all or nothing."""
        await sink.write(batch(partition(1, Committed(), range(2))))
        fresh = partition(0, Committed(), range(3))
        stale = partition(1, Committed(), range(2))  # continues from a position already moved
        with pytest.raises(FencedError) as raised:
            await sink.write(batch(fresh, stale))
        assert raised.value.partitions == [("tickets-1", 0)]
        assert await totals(stack, sink) == [("tickets-1", 2, Decimal("2.50"))]
        assert ("tickets-0", 0) not in await sink.load_offsets(GROUP, ["tickets-0"])

    async def test_concurrent_writers_from_one_offset_only_one_wins(
        self, stack: StackSettings, sink: WarehouseSink
    ) -> None:
        """Two members writing the same partition at once (a rebalance race): exactly one
        commits, whatever the interleaving."""
        await sink.write(batch(partition(0, Committed(), range(1))))
        start = Committed(next_offset=1)
        results = await asyncio.gather(
            sink.write(batch(partition(0, start, range(1, 5)))),
            sink.write(batch(partition(0, start, range(1, 5)))),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["FencedError", "NoneType"]
        assert await totals(stack, sink) == [("tickets-0", 5, Decimal("6.25"))]


class TestSchema:
    async def test_migrate_is_idempotent_and_safe_to_run_concurrently(
        self, stack: StackSettings, postgres_sink: WarehouseSink
    ) -> None:
        """Replicas starting together all migrate: no error, the same objects."""
        await asyncio.gather(postgres_sink.migrate(), postgres_sink.migrate())
        rows = await fetch(
            stack,
            postgres_sink.schema,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 "
            "ORDER BY table_name",
            postgres_sink.schema,
        )
        assert [r["table_name"] for r in rows] == [
            "consumer_offsets",
            "reading_aggregates",
            "reading_aggregates_partial",
            "ticket_aggregates",
            "ticket_aggregates_partial",
        ]


class TestReplaceRange:
    async def test_rows_of_the_range_are_replaced_and_positions_handed_to_build(
        self, stack: StackSettings, sink: WarehouseSink
    ) -> None:
        """Rebuild's transaction: build() gets the locked positions; rows of windows in the
        range are replaced by its batch, rows outside are left alone."""
        windows = PartitionWindows("tickets-0", 0, SPEC, "correction")
        for offset, minute in enumerate((0, 1, 2)):
            windows.add_ticket(
                offset,
                event_us=T0 + minute * 60_000_000,
                customer_id="c1",
                region="emea",
                revenue=Decimal("1.00"),
                latency_ms=1,
            )
        await sink.write(batch(windows))
        seen: list[dict[tuple[str, int], int]] = []

        def build(positions: dict[tuple[str, int], int]) -> WarehouseBatch:
            seen.append(positions)
            rebuilt = partition(0, Committed(), range(2), revenue="5.00")  # both in minute 0
            return batch(rebuilt)

        start = BASE_TIME
        end = BASE_TIME + timedelta(minutes=2)
        await sink.replace_range(GROUP, ["tickets-0"], start, end, build)
        assert seen == [{("tickets-0", 0): 3}]
        rows = await fetch(
            stack,
            sink.schema,
            "SELECT window_start, ticket_count, revenue_sum FROM ticket_aggregates_partial "
            "ORDER BY window_start",
        )
        assert [(r["ticket_count"], r["revenue_sum"]) for r in rows] == [
            (2, Decimal("10.00")),  # minute 0: rebuilt
            (1, Decimal("1.00")),  # minute 2: outside the range, untouched
        ]


class ReplayedCopy(S3ParquetStager):
    """Redshift's ``COPY … FORMAT AS PARQUET`` played on PostgreSQL: the staged object read
    back with ``reader`` (the COPY role's client) and copied into the stage table."""

    def __init__(self, s3: Any, *, reader: Any, **kwargs: Any) -> None:
        super().__init__(s3, **kwargs)
        self.reader = reader
        self.copied: list[str] = []

    async def copy(
        self,
        connection: asyncpg.Connection,
        statements: Statements,
        table: AggregateTable,
        uri: str,
    ) -> None:
        # the statement Redshift would run names this object and the COPY role
        statement = statements.rs_copy_stage(table, uri=uri, iam_role=self.iam_role)
        assert f"FROM '{uri}' IAM_ROLE '{self.iam_role}'" in statement
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        response = await self.reader.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            staged = pq.read_table(io.BytesIO(await body.read()))
        rows = [tuple(row.values()) for row in staged.to_pylist()]
        await connection.copy_records_to_table(
            statements.stage(table), records=rows, columns=list(table.columns)
        )
        self.copied.append(uri)


class TestRedshiftStagingOnS3:
    @pytest.mark.parametrize("rights", ["root", "iam-policy", "iam-policy-without-delete"])
    async def test_deltas_staged_as_parquet_on_s3_add_up_and_the_objects_are_gone_after(
        self,
        stack: StackSettings,
        postgres_sink: WarehouseSink,
        unique: str,
        rights: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The Redshift write with its deltas staged on the real S3 (COPY played on
        PostgreSQL): the rows add up and the staged objects are deleted after the commit.
        "iam-policy": the worker holds only deploy/iam/iot-aggregator.json's rights and the
        COPY reads with deploy/iam/redshift-copy.json's. "iam-policy-without-delete": the
        same less s3:DeleteObject: the committed write stands, the object it cannot delete
        is logged (staging_cleanup_failed) and left for the lifecycle rule."""
        lake_prefix = f"tests/iot-aggregator/{unique}/"
        s3 = stack.s3
        worker: dict[str, str] = {}
        copy_role: dict[str, str] = {}
        if rights != "root":
            prefixes = {"lake": lake_prefix, "backup": lake_prefix}
            worker = await assume_worker_role("iot-aggregator", stack, prefixes)
            if rights == "iam-policy-without-delete":
                local = {"lake": stack.s3.lake_bucket, "backup": stack.s3.backup_bucket}
                policy = moved_policy("iot-aggregator", local, prefixes)
                for statement in policy["Statement"]:
                    statement["Action"] = [a for a in statement["Action"] if a != "s3:DeleteObject"]
                worker = await assume_role(stack, policy, name="iot-aggregator-no-delete")
            copy_role = await assume_worker_role("redshift-copy", stack, prefixes)
            s3 = use_credentials(monkeypatch, worker, stack.s3)
        settings = IotAggregatorSettings(
            kafka=stack.kafka,
            warehouse=stack.warehouse.model_copy(update={"dialect": "redshift"}),
            warehouse_schema=postgres_sink.schema,
            s3=s3,
            lake_prefix=lake_prefix,
            redshift_iam_role="arn:aws:iam::123456789012:role/indutech-redshift-copy",
        )
        staging = f"{lake_prefix}warehouse-staging/iot-aggregator/"
        pool = await create_warehouse_pool(stack.warehouse, min_size=1, max_size=2)
        try:
            # Redshift's COPY reads the object with its own role's rights, not the worker's
            copy_reader = s3_client_as(stack, copy_role) if copy_role else create_s3_client(s3)
            async with create_s3_client(s3) as client, copy_reader as reader:
                made = settings.stager_for(client)  # the bucket and prefix the worker uses
                stager = ReplayedCopy(
                    client,
                    reader=reader,
                    bucket=made.bucket,
                    prefix=made.prefix,
                    iam_role=made.iam_role,
                )
                sink = RedshiftSink(pool, Statements(postgres_sink.schema, "redshift"), stager)
                with capture_logs() as logs:
                    await sink.write(batch(partition(0, Committed(), range(3))))
            assert await totals(stack, postgres_sink) == [("tickets-0", 3, Decimal("3.75"))]
            (copied,) = stager.copied
            assert copied.startswith(f"s3://{stack.s3.lake_bucket}/{staging}")
            left = await list_keys(stack.s3, stack.s3.lake_bucket, lake_prefix)
            failed = [e for e in logs if e["event"] == "staging_cleanup_failed"]
            if rights == "iam-policy-without-delete":
                assert [e["keys"] for e in failed] == [left]
                assert copied.endswith(left[0])
                assert "AccessDenied" in failed[0]["error"]
            else:
                assert (left, failed) == ([], [])
            if worker:
                # the policy was in force: the worker's staging rights end at its own prefix
                async with s3_client_as(stack, worker) as denied:
                    with pytest.raises(ClientError, match="AccessDenied"):
                        await denied.put_object(
                            Bucket=stack.s3.lake_bucket,
                            Key=f"{lake_prefix}warehouse-staging/sql-to-redshift/forged.parquet",
                            Body=b"x",
                        )
        finally:
            await pool.close()
            await delete_prefix(stack.s3, stack.s3.lake_bucket, lake_prefix)
