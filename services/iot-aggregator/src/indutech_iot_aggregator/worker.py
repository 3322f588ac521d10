"""iot-aggregator: the lifecycle. The window logic is in ``windows``, the SQL in ``sinks``.

One unit of work is a poll: its records go into their partitions' windows (bad
and refused-late records to the dead-letter topic), then a warehouse write is
made when one is due: windows closed (a final write), the emission interval
passed (a provisional write), or the open-keys cap reached. A write is one
transaction holding the deltas and the offsets of every partition it covers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from indutech_common.kafka import require_topics
from indutech_common.lifecycle import Worker
from indutech_common.retry import Backoff
from indutech_common.s3 import create_s3_client
from indutech_common.schemas import ClientTicket, Topics
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_aggregator.errors import FencedError, InvalidRecordError
from indutech_iot_aggregator.sinks import DeadLetter, DeadLetterSink, WarehouseBatch
from indutech_iot_aggregator.sinks.warehouse import Stager, open_sink
from indutech_iot_aggregator.sources import RecordDecoder, TopicSource
from indutech_iot_aggregator.windows import (
    US_PER_S,
    Committed,
    PartitionWindows,
    Verdict,
    WindowSpec,
)

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

# What a warehouse outage looks like from asyncpg: retried, never fatal.
WAREHOUSE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
RECOVERY_RETRY_S = 1.0


@dataclass
class PartitionState:
    tp: TopicPartition
    windows: PartitionWindows
    recovering: bool = True


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: IotAggregatorWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._worker.on_assigned(set(assigned))


class IotAggregatorWorker(Worker[IotAggregatorSettings]):
    name = "iot-aggregator"

    def __init__(self, settings: IotAggregatorSettings) -> None:
        super().__init__(settings)
        self.spec = WindowSpec.of(size_s=settings.window_s, grace_s=settings.grace_s)
        self.decoder = RecordDecoder(
            sensor_topic=settings.sensor_topic,
            ticket_topic=settings.ticket_topic,
            max_future_s=settings.max_future_s,
        )
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self._last_write = time.monotonic()
        self._retry_at = 0.0
        self._recovery_at = 0.0
        self._delays = Backoff(initial_s=0.2, max_s=settings.retry_max_s).delays()
        self._capped = False
        self._newest_final_us: int | None = None
        r = self.metrics.registry
        self.windows_open = Gauge(
            "indutech_iot_aggregator_windows_open",
            "Window keys (window, group, partition) held in memory since the last write",
            ["worker"],
            registry=r,
        )
        self.late_events = Counter(
            "indutech_iot_aggregator_late_events",
            "Events later than the grace period, by what was done with them",
            ["worker", "policy"],
            registry=r,
        )
        self.writes = Counter(
            "indutech_iot_aggregator_warehouse_writes",
            "Warehouse transactions by outcome (ok, fenced, failed)",
            ["worker", "outcome"],
            registry=r,
        )
        self.rows_written = Counter(
            "indutech_iot_aggregator_rows_upserted",
            "Partial-aggregate rows upserted",
            ["worker"],
            registry=r,
        )
        self.ingestion_lag = Gauge(
            "indutech_iot_aggregator_ingestion_lag_seconds",
            "Now minus the end of the newest window written final (the seed's alarm: > 1 h)",
            ["worker"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "indutech_iot_aggregator_consumer_lag_records",
            "Records of a partition not yet in the warehouse (high-water mark - its offset)",
            ["worker", "topic", "partition"],
            registry=r,
        )
        self.paused_gauge = Gauge(
            "indutech_iot_aggregator_paused",
            "1 while consumption is paused: the open-keys cap is reached and writes fail",
            ["worker"],
            registry=r,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        settings = self.settings
        # Missing or mis-configured topics stop the start (exit 2) naming the fix.
        topics = {settings.sensor_topic: Topics.SENSOR_READINGS}
        topics |= {settings.ticket_topic: Topics.CLIENT_TICKETS}
        topics |= {settings.dead_letter_topic: Topics.DEAD_LETTER}
        await require_topics(settings.kafka, topics, worker=self.name)
        stager: Stager | None = None
        if settings.warehouse.dialect == "redshift" and settings.s3 is not None:
            stager = settings.stager_for(await self.enter("s3", create_s3_client(settings.s3)))
        self.sink = self.adopt(
            await open_sink(settings.warehouse, schema=settings.warehouse_schema, stager=stager)
        )
        if settings.create_schema:
            await self.sink.migrate()
        self.dead_letters = self.adopt(
            await DeadLetterSink.open(
                settings.kafka, topic=settings.dead_letter_topic, metrics=self.metrics
            )
        )
        self.source = self.adopt(
            await TopicSource.open(
                settings.kafka,
                settings.topics,
                group_id=settings.group_id,
                group_instance_id=settings.group_instance_id,
                session_timeout_ms=settings.session_timeout_ms,
                max_records=settings.poll_max_records,
                listener=_Rebalance(self),
            )
        )
        self.log.info(
            "consuming",
            topics=list(settings.topics),
            group_id=settings.group_id,
            schema=settings.warehouse_schema,
            window_s=settings.window_s,
            grace_s=settings.grace_s,
            late_policy=settings.late_policy,
        )

    async def main_loop(self) -> None:
        while not self.should_exit.is_set():
            await self._recover()
            batches = await self.source.read()
            letters: list[DeadLetter] = []
            for tp, records in batches.items():
                state = self.partitions.get(tp)
                if state is not None and not state.recovering:
                    self._take(state, records, letters)
            if letters and not await self._dead_letter(letters):
                continue
            now = time.monotonic()
            self._close_idle(now)
            if self._write_due(now):
                await self._write(now)
            # At the cap while writes fail (or wait for their retry): stop fetching.
            self._apply_cap()
            self._update_gauges()
        await self._last_write_before_stop()

    async def _dead_letter(self, letters: list[DeadLetter]) -> bool:
        """Send the poll's dead letters before their offsets can be written. If Kafka refuses,
        their partitions drop what they read and read it again from the warehouse offsets
        (after a pause), so no dead letter is lost and nothing is counted twice."""
        try:
            await self.dead_letters.write(letters)
        except KafkaError as exc:
            partitions = sorted({(letter.topic, letter.partition) for letter in letters})
            self.metrics.error("dead_letter")
            self.log.warning(
                "dead_letters_failed",
                error=f"{type(exc).__name__}: {exc}",
                partitions=[f"{t}[{p}]" for t, p in partitions],
            )
            self._refence(partitions)
            self._recovery_at = time.monotonic() + RECOVERY_RETRY_S
            return False
        return True

    async def _last_write_before_stop(self) -> None:
        """SIGTERM: what was read is written once more, so the next owner starts from there."""
        if any(s.windows.dirty for s in self.partitions.values() if not s.recovering):
            await self._write(time.monotonic())

    # -- rebalances --------------------------------------------------------------------------

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self.partitions:
                self.partitions[tp] = PartitionState(tp, self._windows(tp, Committed()))
        # paused until positioned at the warehouse's offsets (never Kafka's)
        self.source.pause(*assigned)
        self.log.info("partitions_assigned", partitions=sorted(str(tp) for tp in assigned))

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # What was not written is dropped: the next owner reads it again from the
        # warehouse offsets (and a late write of ours would be fenced).
        dropped = 0
        for tp in revoked:
            state = self.partitions.pop(tp, None)
            if state is not None:
                dropped += state.windows.records
        self.log.info(
            "partitions_revoked",
            partitions=sorted(str(tp) for tp in revoked),
            dropped_records=dropped,
        )

    def _windows(self, tp: TopicPartition, committed: Committed) -> PartitionWindows:
        return PartitionWindows(
            tp.topic,
            tp.partition,
            self.spec,
            self.settings.late_policy,
            committed=committed,
            last_activity=time.monotonic(),
        )

    async def _recover(self) -> None:
        """Position newly assigned (or fenced) partitions at the warehouse's offsets."""
        pending = [s for s in self.partitions.values() if s.recovering]
        if not pending or time.monotonic() < self._recovery_at:
            return
        try:
            committed = await self.sink.load_offsets(self.settings.group_id, self.settings.topics)
        except WAREHOUSE_ERRORS as exc:
            self.metrics.error("offsets_load")
            self.log.warning("offsets_load_failed", error=f"{type(exc).__name__}: {exc}")
            self._recovery_at = time.monotonic() + RECOVERY_RETRY_S
            return
        for state in pending:
            tp = state.tp
            if self.partitions.get(tp) is not state:
                continue  # revoked meanwhile
            position = committed.get((tp.topic, tp.partition), Committed())
            state.windows = self._windows(tp, position)
            if not await self.source.seek(tp, position.next_offset):
                continue  # revoked meanwhile: the next assignment recovers it again
            state.recovering = False
            if not self._capped:
                self.source.resume(tp)
            self.log.info("partition_ready", partition=str(tp), next_offset=position.next_offset)

    # -- records -----------------------------------------------------------------------------

    def _take(
        self,
        state: PartitionState,
        records: list[ConsumerRecord[Any, Any]],
        letters: list[DeadLetter],
    ) -> None:
        windows = state.windows
        tp = state.tp
        now_us = to_us_now()
        taken = 0
        for record in records:
            try:
                item, event_us = self.decoder.decode(tp.topic, record.value, now_us=now_us)
            except InvalidRecordError as exc:
                if windows.skip(record.offset):
                    letters.append(_letter(record, exc.reason, str(exc)))
                continue
            if isinstance(item, ClientTicket):
                verdict = windows.add_ticket(
                    record.offset,
                    event_us=event_us,
                    customer_id=item.customer_id,
                    region=item.region,
                    revenue=item.revenue,
                    latency_ms=item.latency_ms,
                )
            else:
                verdict = windows.add_reading(
                    record.offset,
                    event_us=event_us,
                    sensor_id=item.sensor_id,
                    site=item.site,
                    metric=item.metric,
                    value=item.value,
                )
            if verdict is Verdict.DUPLICATE:
                continue
            taken += 1
            if verdict is Verdict.CORRECTION:
                self.late_events.labels(self.name, "correction").inc()
            elif verdict is Verdict.LATE_REFUSED:
                self.late_events.labels(self.name, "dead_letter").inc()
                letters.append(
                    _letter(
                        record,
                        "late_event",
                        f"event_time {item.event_time.isoformat()} falls in a window closed "
                        f"{self.settings.grace_s} s grace ago; replay it from the dead-letter "
                        "topic with late_policy=correction, or rebuild the range from the lake",
                    )
                )
        if records:
            windows.last_activity = time.monotonic()
        self.metrics.records_in.labels(self.name, tp.topic).inc(taken)

    def _close_idle(self, now: float) -> None:
        for state in self.partitions.values():
            windows = state.windows
            idle = now - windows.last_activity >= self.settings.idle_close_s
            if not state.recovering and idle and windows.close_idle():
                self.log.info("idle_partition_closed", partition=str(state.tp))

    # -- warehouse writes --------------------------------------------------------------------

    def _open_keys(self) -> int:
        return sum(s.windows.open_keys for s in self.partitions.values())

    def _write_due(self, now: float) -> bool:
        if now < self._retry_at:
            return False
        live = [s.windows for s in self.partitions.values() if not s.recovering]
        if any(w.final_due for w in live):
            return True
        if self._open_keys() >= self.settings.max_open_keys:
            return True
        return now - self._last_write >= self.settings.emit_interval_s and any(
            w.dirty for w in live
        )

    async def _write(self, now: float) -> None:
        states = [s for s in self.partitions.values() if not s.recovering]
        pairs = [(s, b) for s in states if (b := s.windows.batch()) is not None]
        if not pairs:
            return
        batch = WarehouseBatch(self.settings.group_id, self.spec.size_us, [b for _, b in pairs])
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.sink.write(batch), timeout=self.settings.write_timeout_s)
        except FencedError as exc:
            self.writes.labels(self.name, "fenced").inc()
            self.metrics.error("fenced")
            self.log.warning("write_fenced", partitions=[f"{t}[{p}]" for t, p in exc.partitions])
            self._refence(exc.partitions)
            return
        except WAREHOUSE_ERRORS as exc:
            self.writes.labels(self.name, "failed").inc()
            self.metrics.error("warehouse_write")
            delay = next(self._delays)
            self._retry_at = time.monotonic() + delay
            self.log.warning(
                "write_failed",
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=round(delay, 2),
                open_keys=self._open_keys(),
            )
            return
        duration = time.perf_counter() - started
        self._delays = Backoff(initial_s=0.2, max_s=self.settings.retry_max_s).delays()
        self._last_write = now
        advisory: dict[TopicPartition, int] = {}
        for state, part in pairs:
            state.windows.written(part)
            advisory[state.tp] = part.next_offset
            self.metrics.record_success(
                stream=part.topic,
                count=part.records,
                last_event_time=(
                    None if part.newest_event_us is None else part.newest_event_us / US_PER_S
                ),
            )
            if part.final_due and part.closed_before_us is not None:
                newest = self._newest_final_us
                self._newest_final_us = max(newest or part.closed_before_us, part.closed_before_us)
        self.writes.labels(self.name, "ok").inc()
        self.rows_written.labels(self.name).inc(batch.rows)
        self.metrics.batch_duration.labels(self.name).observe(duration)
        self.log.info(
            "batch_written",
            partitions=len(pairs),
            records=batch.records,
            rows=batch.rows,
            final=sum(1 for _, p in pairs if p.final_due),
            duration_s=round(duration, 3),
        )
        await self.source.commit_advisory(advisory)

    def _refence(self, partitions: list[tuple[str, int]]) -> None:
        """Fenced partitions drop their deltas and are read again from the warehouse offsets."""
        for topic, partition in partitions:
            tp = TopicPartition(topic, partition)
            state = self.partitions.get(tp)
            if state is not None:
                state.recovering = True
                self.source.pause(tp)

    def _apply_cap(self) -> None:
        """Backpressure: at the cap with writes failing, stop fetching until a write succeeds."""
        capped = self._open_keys() >= self.settings.max_open_keys
        live = [s.tp for s in self.partitions.values() if not s.recovering]
        if capped and not self._capped:
            self.source.pause(*live)
            self.log.warning("paused_at_cap", open_keys=self._open_keys())
        elif not capped and self._capped:
            self.source.resume(*live)
            self.log.info("resumed")
        self._capped = capped
        self.paused_gauge.labels(self.name).set(1 if capped else 0)

    def _update_gauges(self) -> None:
        self.windows_open.labels(self.name).set(self._open_keys())
        if self._newest_final_us is not None:
            lag = time.time() - self._newest_final_us / US_PER_S
            self.ingestion_lag.labels(self.name).set(max(0.0, lag))
        for state in self.partitions.values():
            high = self.source.highwater(state.tp)
            position = state.windows.committed.next_offset
            if high is not None and position is not None:
                self.consumer_lag.labels(self.name, state.tp.topic, str(state.tp.partition)).set(
                    max(0, high - position)
                )


def to_us_now() -> int:
    return time.time_ns() // 1000


def _letter(record: ConsumerRecord[Any, Any], reason: str, error: str) -> DeadLetter:
    return DeadLetter(
        value=record.value or b"",
        key=record.key,
        reason=reason,
        error=error,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
