"""``iot-aggregator rebuild --from … --to …``: recompute a time range from the lake.

The range is rebuilt in *chunks* of whole windows (``rebuild_chunk_s`` of event time,
an hour by default, aligned on the epoch so that hour chunks match the lake's hour
folders). Per chunk:

1. the stream's known partitions, then iot-to-s3's committed offsets (what the lake
   holds), are read *before* the chunk's objects are listed: every record below those
   offsets was written to S3 before it was committed, so the listing holds it;
2. the chunk's records are read from the lake's Parquet (only its columns, only its
   event-time range): this is all that is held in memory, one chunk at a time;
3. one warehouse transaction locks the stream's positions (``consumer_offsets``), checks
   the lake holds every record below them, aggregates the chunk's records below them
   with pyarrow (``group_by`` into the same mergeable partial aggregates the stream
   writes: counts, exact decimal sums, latency sum/count/min/max, value sum/min/max),
   and replaces the chunk's rows with the stream's upsert.

What makes it safe to run beside the stream, per chunk as before per range:

- Only the records *below* the stream's positions (read under the lock) are counted;
  records the stream has not read yet are left to it, so nothing is counted twice. The
  stream's writes of those partitions wait for the chunk's commit (at most one chunk).
- The lake must hold every record below those positions, or the chunk stops (nothing of
  it written) and the command says to wait for iot-to-s3's next flush.
- Every record of the range counts, as under ``late_policy=correction``; the rows are
  written final.

Transactions: one per chunk. A crash, or a refusal, in the middle leaves the chunks
before it rebuilt, each with exactly the rows the stream would have written for the
records below its positions at that moment, and the others as they were; running the
same command again rebuilds the whole range (a chunk rebuilt twice gives the same rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from indutech_common.kafka import create_consumer, start_client, stop_client
from indutech_common.s3 import create_s3_client
from indutech_common.schemas.lake import OFFSET_COLUMN, PARTITION_COLUMN
from indutech_common.settings import KafkaSettings
from indutech_iot_aggregator.access import opened_sink
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_aggregator.errors import BadRangeError, LakeBehindError
from indutech_iot_aggregator.sinks import WarehouseBatch, WarehouseSink
from indutech_iot_aggregator.sources.lake import (
    READING_COLUMNS,
    TICKET_COLUMNS,
    LakeProgress,
    LakeSource,
)
from indutech_iot_aggregator.windows import (
    US_PER_S,
    PartitionBatch,
    ReadingAggregate,
    ReadingKey,
    TicketAggregate,
    TicketKey,
    from_us,
    to_us,
)

_log = structlog.get_logger("iot-aggregator.rebuild")
_WINDOW = "window_start_us"
_EVENT_US = "event_us"


@dataclass(frozen=True)
class ChunkDone:
    """Progress: one chunk rebuilt and committed."""

    index: int  # 1-based
    chunks: int
    start: datetime
    end: datetime
    records: int  # lake records counted (below the stream's positions)
    rows: int
    windows: int
    left_to_stream: int
    records_held: int  # lake records of the chunk held in memory for its aggregation
    read_s: float
    seconds: float


@dataclass
class RebuildReport:
    windows: int = 0
    rows: int = 0
    records: int = 0
    left_to_stream: int = 0  # lake records at or past the stream's positions
    partitions: dict[str, int] = field(default_factory=dict)  # "topic[p]" → position
    chunks: int = 0  # chunks committed
    # the most lake records held in memory at once: those of the largest chunk
    peak_records_held: int = 0
    read_s: float = 0.0  # time spent reading the lake


def check_range(start: datetime, end: datetime, window_s: int) -> None:
    """The range must be whole windows, with a time zone."""
    if start.tzinfo is None or end.tzinfo is None:
        raise BadRangeError("--from and --to need a UTC offset, e.g. 2026-03-01T10:00:00+00:00")
    if end <= start:
        raise BadRangeError("--to must be after --from")
    size = window_s * US_PER_S
    for name, moment in (("--from", start), ("--to", end)):
        if to_us(moment) % size:
            raise BadRangeError(
                f"{name} {moment.isoformat()} is not a window boundary: windows are "
                f"{window_s} s aligned on the epoch (e.g. a whole minute for 60 s)"
            )


def chunk_bounds(
    start_us: int, end_us: int, *, window_us: int, chunk_s: int
) -> Iterator[tuple[int, int]]:
    """``[start, end)`` cut into chunks of whole windows: ``chunk_s`` rounded down to whole
    windows (one at least), boundaries on multiples of that length since the epoch (an
    hour chunk is a lake hour folder); the first and last chunks may be shorter."""
    length = max(1, chunk_s * US_PER_S // window_us) * window_us
    low = start_us
    while low < end_us:
        high = min(end_us, low - low % length + length)
        yield low, high
        low = high


class LakePositions:
    """iot-to-s3's committed offsets (every record below them is in the lake), read with
    one consumer that joins no group, for as many questions as a rebuild asks."""

    def __init__(self, kafka: KafkaSettings, group_id: str) -> None:
        self._kafka = kafka
        self._consumer: AIOKafkaConsumer = create_consumer(kafka, group_id=group_id)

    async def __aenter__(self) -> LakePositions:
        await start_client(self._consumer, self._kafka)
        return self

    async def __aexit__(self, *_: object) -> None:
        await stop_client(self._consumer)

    async def committed(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int | None]:
        return {
            (topic, partition): await self._consumer.committed(TopicPartition(topic, partition))
            for topic, partition in partitions
        }


async def lake_positions(
    kafka: KafkaSettings, group_id: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int | None]:
    """iot-to-s3's committed offsets of ``partitions``: every record below them is in the
    lake. Read only: the consumer joins no group."""
    async with LakePositions(kafka, group_id) as positions:
        return await positions.committed(partitions)


# -- the aggregation: pyarrow over a chunk's records ----------------------------------------


def _below(
    table: pa.Table, topic: str, positions: dict[tuple[str, int], int]
) -> tuple[pa.Table, int]:
    """The records of partitions the stream knows, below its position, in offset order per
    partition; and how many of those partitions' records are at or past it."""
    known = sorted((p, n) for (t, p), n in positions.items() if t == topic)
    if not known or table.num_rows == 0:
        return table.slice(0, 0), 0
    parts = pa.array([p for p, _ in known], table.schema.field(PARTITION_COLUMN).type)
    limits = pa.array([n for _, n in known], pa.int64())
    # null for a partition the stream does not know: neither counted nor left to it
    limit = pc.take(limits, pc.index_in(table.column(PARTITION_COLUMN), value_set=parts))
    below = pc.less(table.column(OFFSET_COLUMN), limit)
    left = pc.sum(pc.and_(pc.is_valid(limit), pc.invert(below))).as_py() or 0
    # the stream adds a partition's records in offset order: so do the float sums here
    kept = table.filter(below).sort_by(
        [(PARTITION_COLUMN, "ascending"), (OFFSET_COLUMN, "ascending")]
    )
    return kept, left


def _with_windows(table: pa.Table, window_us: int) -> pa.Table:
    """Adds each record's event time and window start in µs since the epoch."""
    micros = pc.cast(pc.cast(table.column("event_time"), pa.timestamp("us", tz="UTC")), pa.int64())
    starts = pc.multiply(pc.divide(micros, window_us), window_us)
    # integer division truncates toward zero: a time before 1970 belongs one window back
    starts = pc.if_else(pc.greater(starts, micros), pc.subtract(starts, window_us), starts)
    return table.append_column(_EVENT_US, micros).append_column(_WINDOW, starts)


@dataclass
class _Partition:
    """One source partition's share of a chunk, in the stream's state types."""

    tickets: dict[TicketKey, TicketAggregate] = field(default_factory=dict)
    readings: dict[ReadingKey, ReadingAggregate] = field(default_factory=dict)
    records: int = 0
    newest_us: int | None = None


def _grouped(
    table: pa.Table, keys: Sequence[str], measures: Sequence[tuple[str, str]]
) -> Iterator[tuple[Any, ...]]:
    """Rows of ``keys`` then ``measures`` (``column_function`` names) of a group_by. One
    thread: each group's values are added in the table's order, as the stream adds them.
    (Any: the lake's schema fixes the types: int64 µs, str, decimal128 → Decimal, float.)"""
    groups = table.group_by(list(keys), use_threads=False).aggregate(list(measures))
    names = [*keys, *(f"{column}_{function}" for column, function in measures)]
    return zip(*(groups.column(name).to_pylist() for name in names), strict=True)


def _merge_tickets(table: pa.Table, into: dict[int, _Partition]) -> None:
    for start, customer, region, part, count, revenue, total, least, most in _grouped(
        table,
        (_WINDOW, "customer_id", "region", PARTITION_COLUMN),
        (
            (OFFSET_COLUMN, "count"),
            ("revenue", "sum"),  # decimal128(18, 2) in, decimal128(38, 2) out: exact
            ("latency_ms", "sum"),
            ("latency_ms", "min"),
            ("latency_ms", "max"),
        ),
    ):
        delta = TicketAggregate(
            count=count,
            revenue=revenue,
            latency_sum=total,
            latency_count=count,
            latency_min=least,
            latency_max=most,
        )
        state = into.setdefault(part, _Partition()).tickets
        key = (start, customer, region)
        if key in state:
            state[key].merge(delta)
        else:
            state[key] = delta


def _merge_readings(table: pa.Table, into: dict[int, _Partition]) -> None:
    for start, sensor, site, metric, part, count, total, least, most in _grouped(
        table,
        (_WINDOW, "sensor_id", "site", "metric", PARTITION_COLUMN),
        (
            (OFFSET_COLUMN, "count"),
            ("value", "sum"),
            ("value", "min"),
            ("value", "max"),
        ),
    ):
        delta = ReadingAggregate(count=count, total=total, minimum=least, maximum=most)
        state = into.setdefault(part, _Partition()).readings
        key = (start, sensor, site, metric)
        if key in state:
            state[key].merge(delta)
        else:
            state[key] = delta


def _merge_totals(table: pa.Table, into: dict[int, _Partition]) -> None:
    for part, count, newest in _grouped(
        table, (PARTITION_COLUMN,), ((OFFSET_COLUMN, "count"), (_EVENT_US, "max"))
    ):
        state = into.setdefault(part, _Partition())
        state.records += count
        state.newest_us = newest if state.newest_us is None else max(state.newest_us, newest)


def aggregate(
    *,
    tickets_topic: str,
    tickets: pa.Table,
    readings_topic: str,
    readings: pa.Table,
    positions: dict[tuple[str, int], int],
    window_us: int,
    end_us: int,
    report: RebuildReport,
) -> list[PartitionBatch]:
    """The lake records below the stream's positions, aggregated per source partition into
    the stream's partial aggregates (every window before ``end_us`` final). Records of
    partitions the stream has no position for are left out, as their rows are."""
    batches: list[PartitionBatch] = []
    for topic, table, merge in (
        (tickets_topic, tickets, _merge_tickets),
        (readings_topic, readings, _merge_readings),
    ):
        below, left = _below(table, topic, positions)
        report.left_to_stream += left
        report.records += below.num_rows
        parts: dict[int, _Partition] = {}
        if below.num_rows:
            below = _with_windows(below, window_us)
            merge(below, parts)
            _merge_totals(below, parts)
        for (source, partition), position in sorted(positions.items()):
            if source != topic:
                continue
            state = parts.get(partition, _Partition())
            batches.append(
                PartitionBatch(
                    topic=topic,
                    partition=partition,
                    expected_offset=position,
                    next_offset=position,
                    watermark_us=state.newest_us,
                    closed_before_us=end_us,  # every rebuilt window is final
                    tickets=state.tickets,
                    readings=state.readings,
                    records=state.records,
                    newest_event_us=state.newest_us,
                )
            )
    return batches


@dataclass
class _Chunk:
    """What one chunk's transaction needs once it holds the stream's positions."""

    settings: IotAggregatorSettings
    window_us: int
    end_us: int
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
                "rebuild again; nothing of this chunk was written (chunks before it, if "
                "any, are rebuilt)"
            )
        report.partitions = {f"{t}[{p}]": n for (t, p), n in sorted(positions.items())}
        parts = aggregate(
            tickets_topic=settings.ticket_topic,
            tickets=self.tickets,
            readings_topic=settings.sensor_topic,
            readings=self.readings,
            positions=positions,
            window_us=self.window_us,
            end_us=self.end_us,
            report=report,
        )
        return WarehouseBatch(settings.group_id, self.window_us, parts)


def _windows(batch: WarehouseBatch) -> int:
    return len(
        {k[0] for p in batch.partitions for k in p.tickets}
        | {k[0] for p in batch.partitions for k in p.readings}
    )


async def _rebuild_chunk(
    settings: IotAggregatorSettings,
    sink: WarehouseSink,
    lake: LakeSource,
    *,
    in_lake_of: LakePositions,
    start: datetime,
    end: datetime,
    read_progress: Callable[[LakeProgress], None],
    index: int,
    chunks: int,
) -> tuple[ChunkDone, dict[str, int]]:
    """Read one chunk from the lake and replace its rows in one transaction. Its records
    are released on return: one chunk is held at a time."""
    began = time.monotonic()
    topics = list(settings.topics)
    # The partitions the stream knows (their positions are read again under lock), then
    # what the lake holds: both before the listing, so that every record below the lake's
    # offsets is in what is read (iot-to-s3 writes an object before committing past it).
    known = await sink.load_offsets(settings.group_id, topics)
    in_lake = await in_lake_of.committed(sorted(known))
    tickets = await lake.read_range(
        settings.ticket_topic, TICKET_COLUMNS, start, end, read_progress
    )
    readings = await lake.read_range(
        settings.sensor_topic, READING_COLUMNS, start, end, read_progress
    )
    read_s = time.monotonic() - began
    window_us = settings.window_s * US_PER_S
    chunk = _Chunk(settings, window_us, to_us(end), in_lake, tickets, readings)
    batch = await sink.replace_range(settings.group_id, topics, start, end, chunk.build)
    done = ChunkDone(
        index=index,
        chunks=chunks,
        start=start,
        end=end,
        records=chunk.report.records,
        rows=batch.rows,
        windows=_windows(batch),
        left_to_stream=chunk.report.left_to_stream,
        records_held=tickets.num_rows + readings.num_rows,
        read_s=read_s,
        seconds=time.monotonic() - began,
    )
    return done, chunk.report.partitions


async def rebuild(
    settings: IotAggregatorSettings,
    start: datetime,
    end: datetime,
    *,
    chunk_s: int | None = None,
    progress: Callable[[ChunkDone], None] | None = None,
) -> RebuildReport:
    """Recompute ``[start, end)`` from the lake into the warehouse, chunk by chunk (see the
    module doc). ``chunk_s`` overrides ``settings.rebuild_chunk_s``; ``progress`` is called
    after each chunk's commit."""
    check_range(start, end, settings.window_s)
    if settings.s3 is None:
        raise BadRangeError(
            "rebuild reads the lake: set the S3 settings (INDUTECH_S3__* or IOT_AGGREGATOR_S3__*)"
        )
    if chunk_s is not None and chunk_s <= 0:
        raise BadRangeError("--chunk-s must be a positive number of seconds")
    chunks = list(
        chunk_bounds(
            to_us(start),
            to_us(end),
            window_us=settings.window_s * US_PER_S,
            chunk_s=settings.rebuild_chunk_s if chunk_s is None else chunk_s,
        )
    )
    _log.info(
        "rebuild_started",
        start=start.isoformat(),
        end=end.isoformat(),
        topics=list(settings.topics),
        chunks=len(chunks),
    )

    def read_progress(step: LakeProgress) -> None:
        _log.debug(
            "rebuild_lake_read",
            topic=step.topic,
            hour=step.hour.isoformat(),
            objects=step.objects,
            records=step.records,
        )

    report = RebuildReport()
    async with (
        create_s3_client(settings.s3) as s3,
        opened_sink(settings) as sink,
        LakePositions(settings.kafka, settings.lake_group_id) as in_lake_of,
    ):
        lake = LakeSource(s3, bucket=settings.s3.lake_bucket, lake_prefix=settings.lake_prefix)
        if settings.create_schema:
            await sink.migrate()
        for index, (low, high) in enumerate(chunks, start=1):
            done, partitions = await _rebuild_chunk(
                settings,
                sink,
                lake,
                in_lake_of=in_lake_of,
                start=from_us(low),
                end=from_us(high),
                read_progress=read_progress,
                index=index,
                chunks=len(chunks),
            )
            report.chunks += 1
            report.records += done.records
            report.rows += done.rows
            report.windows += done.windows  # chunks are whole windows: none counted twice
            report.left_to_stream += done.left_to_stream
            report.partitions = partitions
            report.peak_records_held = max(report.peak_records_held, done.records_held)
            report.read_s += done.read_s
            _log.info(
                "rebuild_progress",
                chunk=index,
                chunks=len(chunks),
                start=done.start.isoformat(),
                end=done.end.isoformat(),
                records=done.records,
                rows=done.rows,
                left_to_stream=done.left_to_stream,
                records_held=done.records_held,
                read_s=round(done.read_s, 3),
                seconds=round(done.seconds, 3),
            )
            if progress is not None:
                progress(done)

    _log.info(
        "rebuild_done",
        records=report.records,
        rows=report.rows,
        windows=report.windows,
        chunks=report.chunks,
        left_to_stream=report.left_to_stream,
        peak_records_held=report.peak_records_held,
        read_s=round(report.read_s, 3),
        positions=report.partitions,
    )
    return report
