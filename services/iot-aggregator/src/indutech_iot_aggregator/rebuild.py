"""``iot-aggregator rebuild --from … --to …``: recompute a time range from the lake.

The records of the range are read from the lake's Parquet (flow 2), aggregated
by the same window code, and written by the same upsert, in one transaction
that replaces the range's rows. What makes it safe to run beside the stream:

- The stream's positions (``consumer_offsets``) are read under a row lock in
  that transaction, and only the records *below* them are taken from the lake:
  records the stream has not read yet are left to it, so nothing is counted
  twice. The stream's writes of those partitions wait for the commit.
- The lake must hold every record below those positions: iot-to-s3's committed
  offsets (its consumer group) must have reached them, or the rebuild stops
  (nothing written) and says to wait for iot-to-s3's next flush.
- Every record of the range counts, as under ``late_policy=correction``; the
  rows are written final.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from aiokafka import TopicPartition

from indutech_common.kafka import create_consumer, start_client, stop_client
from indutech_common.s3 import create_s3_client
from indutech_common.schemas.lake import OFFSET_COLUMN, PARTITION_COLUMN
from indutech_common.settings import KafkaSettings
from indutech_iot_aggregator.access import opened_sink
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_aggregator.errors import BadRangeError, LakeBehindError
from indutech_iot_aggregator.sinks import WarehouseBatch
from indutech_iot_aggregator.sources.lake import (
    READING_COLUMNS,
    TICKET_COLUMNS,
    LakeProgress,
    LakeSource,
)
from indutech_iot_aggregator.windows import PartitionBatch, PartitionWindows, WindowSpec, to_us

_log = structlog.get_logger("iot-aggregator.rebuild")
# In a rebuild nothing is late: every record of the range counts.
_NEVER_LATE_US = 2**62


@dataclass
class RebuildReport:
    windows: int = 0
    rows: int = 0
    records: int = 0
    left_to_stream: int = 0  # lake records at or past the stream's positions
    partitions: dict[str, int] = field(default_factory=dict)  # "topic[p]" → position


def check_range(start: datetime, end: datetime, window_s: int) -> None:
    """The range must be whole windows, with a time zone."""
    if start.tzinfo is None or end.tzinfo is None:
        raise BadRangeError("--from and --to need a UTC offset, e.g. 2026-03-01T10:00:00+00:00")
    if end <= start:
        raise BadRangeError("--to must be after --from")
    size = window_s * 1_000_000
    for name, moment in (("--from", start), ("--to", end)):
        if to_us(moment) % size:
            raise BadRangeError(
                f"{name} {moment.isoformat()} is not a window boundary: windows are "
                f"{window_s} s aligned on the epoch (e.g. a whole minute for 60 s)"
            )


async def lake_positions(
    kafka: KafkaSettings, group_id: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int | None]:
    """iot-to-s3's committed offsets of ``partitions``: every record below them is in the
    lake. Read only: the consumer joins no group."""
    consumer = create_consumer(kafka, group_id=group_id)
    await start_client(consumer, kafka)
    try:
        return {
            (topic, partition): await consumer.committed(TopicPartition(topic, partition))
            for topic, partition in partitions
        }
    finally:
        await stop_client(consumer)


def aggregate(
    *,
    tickets_topic: str,
    tickets: pa.Table,
    readings_topic: str,
    readings: pa.Table,
    positions: dict[tuple[str, int], int],
    spec: WindowSpec,
    end_us: int,
    report: RebuildReport,
) -> list[PartitionBatch]:
    """The lake records below the stream's positions, aggregated per source partition."""
    never_late = WindowSpec(spec.size_us, _NEVER_LATE_US)
    batches: list[PartitionBatch] = []
    for topic, table in ((tickets_topic, tickets), (readings_topic, readings)):
        for (source, partition), position in sorted(positions.items()):
            if source != topic:
                continue
            rows = table.filter(pc.equal(table.column(PARTITION_COLUMN), partition))
            below = rows.filter(pc.less(rows.column(OFFSET_COLUMN), position))
            report.left_to_stream += rows.num_rows - below.num_rows
            below = below.sort_by(OFFSET_COLUMN)
            windows = PartitionWindows(topic, partition, never_late, "correction")
            for record in below.to_pylist():
                _add(windows, topic == tickets_topic, record)
            report.records += below.num_rows
            batches.append(
                PartitionBatch(
                    topic=topic,
                    partition=partition,
                    expected_offset=position,
                    next_offset=position,
                    watermark_us=windows.watermark_us,
                    closed_before_us=end_us,  # every rebuilt window is final
                    tickets=windows.tickets,
                    readings=windows.readings,
                    records=below.num_rows,
                    newest_event_us=windows.newest_event_us,
                )
            )
    return batches


def _add(windows: PartitionWindows, is_ticket: bool, record: dict[str, Any]) -> None:
    # The lake's schema fixes the types: int64 offsets, UTC timestamps, decimal128 revenue.
    offset: int = record[OFFSET_COLUMN]
    event_us = to_us(record["event_time"])
    if is_ticket:
        windows.add_ticket(
            offset,
            event_us=event_us,
            customer_id=record["customer_id"],
            region=record["region"],
            revenue=record["revenue"],
            latency_ms=record["latency_ms"],
        )
    else:
        windows.add_reading(
            offset,
            event_us=event_us,
            sensor_id=record["sensor_id"],
            site=record["site"],
            metric=record["metric"],
            value=record["value"],
        )


@dataclass
class _Plan:
    """What the rebuild's transaction needs once it holds the stream's positions."""

    settings: IotAggregatorSettings
    spec: WindowSpec
    end: datetime
    in_lake: dict[tuple[str, int], int | None]
    tickets: pa.Table
    readings: pa.Table
    report: RebuildReport = field(default_factory=RebuildReport)

    def build(self, positions: dict[tuple[str, int], int]) -> WarehouseBatch:
        """Check the lake holds what the stream counted, then aggregate the lake's records
        below the stream's positions (called inside the transaction)."""
        settings, in_lake, report = self.settings, self.in_lake, self.report
        behind = [
            f"{topic}[{partition}] (aggregator at {position}, "
            f"lake at {in_lake.get((topic, partition))})"
            for (topic, partition), position in sorted(positions.items())
            if position > (in_lake.get((topic, partition)) or 0)
        ]
        if behind:
            raise LakeBehindError(
                "the lake does not yet hold every record the aggregator has counted: "
                + ", ".join(behind)
                + f". Wait for iot-to-s3 (group {settings.lake_group_id!r}) to flush, then run "
                "rebuild again; nothing was written"
            )
        report.partitions = {f"{t}[{p}]": n for (t, p), n in sorted(positions.items())}
        parts = aggregate(
            tickets_topic=settings.ticket_topic,
            tickets=self.tickets,
            readings_topic=settings.sensor_topic,
            readings=self.readings,
            positions=positions,
            spec=self.spec,
            end_us=to_us(self.end),
            report=report,
        )
        return WarehouseBatch(settings.group_id, self.spec.size_us, parts)


async def rebuild(settings: IotAggregatorSettings, start: datetime, end: datetime) -> RebuildReport:
    """Recompute ``[start, end)`` from the lake into the warehouse (see the module doc)."""
    check_range(start, end, settings.window_s)
    if settings.s3 is None:
        raise BadRangeError(
            "rebuild reads the lake: set the S3 settings (INDUTECH_S3__* or IOT_AGGREGATOR_S3__*)"
        )
    spec = WindowSpec.of(size_s=settings.window_s, grace_s=settings.grace_s)
    topics = list(settings.topics)
    _log.info("rebuild_started", start=start.isoformat(), end=end.isoformat(), topics=topics)

    def progress(step: LakeProgress) -> None:
        _log.info(
            "rebuild_progress",
            topic=step.topic,
            hour=step.hour.isoformat(),
            objects=step.objects,
            records=step.records,
        )

    async with create_s3_client(settings.s3) as s3:
        lake = LakeSource(s3, bucket=settings.s3.lake_bucket, lake_prefix=settings.lake_prefix)
        tickets = await lake.read_range(settings.ticket_topic, TICKET_COLUMNS, start, end, progress)
        readings = await lake.read_range(
            settings.sensor_topic, READING_COLUMNS, start, end, progress
        )
    async with opened_sink(settings) as sink:
        if settings.create_schema:
            await sink.migrate()
        # The partitions the stream knows; their positions are read again under lock below.
        known = await sink.load_offsets(settings.group_id, topics)
        in_lake = await lake_positions(settings.kafka, settings.lake_group_id, sorted(known))
        plan = _Plan(settings, spec, end, in_lake, tickets, readings)
        batch = await sink.replace_range(settings.group_id, topics, start, end, plan.build)

    report = plan.report
    report.rows = batch.rows
    report.windows = len(
        {k[0] for p in batch.partitions for k in p.tickets}
        | {k[0] for p in batch.partitions for k in p.readings}
    )
    _log.info(
        "rebuild_done",
        records=report.records,
        rows=report.rows,
        windows=report.windows,
        left_to_stream=report.left_to_stream,
        positions=report.partitions,
    )
    return report
