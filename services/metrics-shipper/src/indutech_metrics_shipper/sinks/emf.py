"""Datums → Embedded Metric Format log events → PutLogEvents (``SINK=emf``).

The same buffer and delivery as PutMetricData (sinks/cloudwatch_metrics.py): a
call's datums leave the buffer once CloudWatch Logs accepted it. A call is a
run of consecutive buffered datums as EMF documents (emf.py), within
PutLogEvents' limits (10,000 events, 1,048,576 bytes counting 26 an event,
events in time order, at most 24 h apart); a run too large is halved. The log
group and stream are created when missing (and again if deleted).

A datum EMF cannot carry (a statistic set, a name that is also a dimension key)
is counted as refused, never sent; events CloudWatch Logs refuses in an accepted
call (rejectedLogEventsInfo: too old, too new) are counted the same way.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from indutech_common.retry import Backoff
from indutech_metrics_shipper.convert import Datum
from indutech_metrics_shipper.emf import EmfBatch, EmfEvent, emf_problem
from indutech_metrics_shipper.logs import EVENT_OVERHEAD, MAX_BATCH_BYTES, MAX_EVENTS, MAX_SPAN_MS
from indutech_metrics_shipper.sinks.cloudwatch_metrics import BufferedSink, MetricBuffer

if TYPE_CHECKING:
    from types_aiobotocore_logs import CloudWatchLogsClient

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EmfCall:
    """One PutLogEvents request: its events (time order) and the buffered datums it covers."""

    events: list[EmfEvent]
    datums: int
    refused: int  # datums of the run EMF cannot carry (counted, not sent)

    @property
    def body_bytes(self) -> int:
        return sum(len(e.message.encode()) + EVENT_OVERHEAD for e in self.events)

    def fits(self) -> bool:
        if not self.events:
            return True
        return (
            len(self.events) <= MAX_EVENTS
            and self.body_bytes <= MAX_BATCH_BYTES
            and self.events[-1].timestamp_ms - self.events[0].timestamp_ms <= MAX_SPAN_MS
        )


def pack_emf(datums: list[Datum], namespace: str) -> list[EmfCall]:
    """Calls in datum order, each a run of consecutive datums as full as PutLogEvents'
    limits allow (document sizes are known before rendering; a rendered call is checked)."""
    calls: list[EmfCall] = []
    start = 0
    batch = EmfBatch(namespace)
    for index, datum in enumerate(datums):
        if emf_problem(datum) is not None:
            continue  # counted as refused with the run it is in
        added_bytes, added_events = batch.cost(datum)
        first = datum_ms = int(datum.timestamp * 1000)
        last = datum_ms
        if batch.first_ms is not None and batch.last_ms is not None:
            first, last = min(first, batch.first_ms), max(last, batch.last_ms)
        full = batch.events > 0 and (
            batch.events + added_events > MAX_EVENTS
            or batch.bytes + added_bytes + EVENT_OVERHEAD * (batch.events + added_events)
            > MAX_BATCH_BYTES
            or last - first > MAX_SPAN_MS
        )
        if full:
            calls.extend(_checked(datums[start:index], namespace))
            start, batch = index, EmfBatch(namespace)
        batch.add(index - start, datum)
    if start < len(datums):
        calls.extend(_checked(datums[start:], namespace))
    return calls


def _checked(run: list[Datum], namespace: str) -> list[EmfCall]:
    """The run as one call, rendered and measured; halved if an estimate fell short."""
    batch = EmfBatch(namespace)
    refused = 0
    for index, datum in enumerate(run):
        if emf_problem(datum) is None:
            batch.add(index, datum)
        else:
            refused += 1
    call = EmfCall(sorted(batch.render(), key=lambda e: e.timestamp_ms), len(run), refused)
    if call.fits() or len(run) == 1:
        return [call]
    half = len(run) // 2
    return [*_checked(run[:half], namespace), *_checked(run[half:], namespace)]


class EmfSink(BufferedSink[EmfCall]):
    """Sends buffered datums as EMF log events to one log group and stream."""

    name = "cloudwatch-emf"
    operation = "put_log_events"

    def __init__(
        self,
        client: CloudWatchLogsClient,
        *,
        namespace: str,
        group: str,
        stream: str,
        buffer: MetricBuffer,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(buffer=buffer, backoff=backoff, rng=rng)
        self._client = client
        self.namespace = namespace
        self.group = group
        self.stream = stream
        self._ready = False  # the group and the stream exist

    async def ping(self) -> None:
        await self._client.describe_log_groups(logGroupNamePrefix=self.group, limit=1)

    def pack(self, datums: list[Datum]) -> list[EmfCall]:
        return pack_emf(datums, self.namespace)

    async def send(self, call: EmfCall) -> int:
        if call.refused:
            _log.warning(
                "emf_datums_refused",
                datums=call.refused,
                why="EMF cannot carry them (a statistic set, or a name that is a dimension key)",
            )
        if not call.events:
            return call.refused
        await self._ensure()
        try:
            response = await self._client.put_log_events(
                logGroupName=self.group,
                logStreamName=self.stream,
                logEvents=[
                    {"timestamp": e.timestamp_ms, "message": e.message} for e in call.events
                ],
            )
        except self._client.exceptions.ResourceNotFoundException:
            self._ready = False  # deleted behind our back: created again at the next try
            raise
        rejected = response.get("rejectedLogEventsInfo")
        if not rejected:
            return call.refused
        _log.warning("emf_events_rejected", info=dict(rejected))
        return call.refused + _rejected_datums(rejected, call.events)

    async def _ensure(self) -> None:
        if self._ready:
            return
        with contextlib.suppress(self._client.exceptions.ResourceAlreadyExistsException):
            await self._client.create_log_group(logGroupName=self.group)
        with contextlib.suppress(self._client.exceptions.ResourceAlreadyExistsException):
            await self._client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        self._ready = True


def _rejected_datums(info: Any, events: list[EmfEvent]) -> int:
    """The datums of the events rejectedLogEventsInfo names (too old, expired, too new)."""
    refused: set[int] = set()
    too_old = max(
        int(info.get("tooOldLogEventEndIndex", -1)), int(info.get("expiredLogEventEndIndex", -1))
    )
    for index, event in enumerate(events):
        too_new = "tooNewLogEventStartIndex" in info and index >= info["tooNewLogEventStartIndex"]
        if index <= too_old or too_new:
            refused.update(event.sources)
    return len(refused)
