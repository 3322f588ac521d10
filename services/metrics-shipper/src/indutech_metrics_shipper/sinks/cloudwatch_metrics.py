"""Datums → PutMetricData (or EMF, sinks/emf.py), through a bounded buffer that outlives a
CloudWatch outage.

The buffer holds datums in arrival order up to ``max_datums``; when full, the
oldest are dropped and counted (the newest are the ones an alarm needs). A
flush sends packed calls in order and removes a call's datums only once
CloudWatch accepted them; throttling, 5xx and connection errors end the flush
with everything still buffered, and the next cycle tries again after a jittered
backoff — the scrape loop never waits on CloudWatch for long. The buffer is in
memory (``DatumBuffer``) or on disk (``DiskDatumBuffer``, which outlives a kill).
"""

from __future__ import annotations

import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

import structlog
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from indutech_common.retry import Backoff
from indutech_metrics_shipper.batching import Call, DatumValidator, RequestSizer, pack
from indutech_metrics_shipper.convert import Datum
from indutech_metrics_shipper.errors import DatumTooLargeError

if TYPE_CHECKING:
    from types_aiobotocore_cloudwatch import CloudWatchClient

_log = structlog.get_logger(__name__)
HTTP_SERVER_ERROR = 500

# Errors after which the same call may succeed later; anything else is a bug or bad
# input in the call and is dropped with a log rather than retried forever.
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServiceError",
        "RequestTimeout",
        "ServiceUnavailableException",  # CloudWatch Logs
        "ResourceNotFoundException",  # Logs: the EMF group or stream deleted, created again
    }
)
# A call refused for what is in it: find the datums at fault, drop them, send the rest.
_INVALID_CODES = frozenset({"InvalidParameterValue", "InvalidParameterCombination"})
_LOGGED_NAMES = 10  # metric names in one log event, at most


class PackedCall(Protocol):
    """One API call's worth of datums."""

    @property
    def datums(self) -> int: ...


CallT = TypeVar("CallT", bound=PackedCall)


class MetricBuffer(Protocol):
    """What the sink needs of a buffer (memory or disk)."""

    dropped: int

    def extend(self, datums: Iterable[Datum]) -> int: ...

    def snapshot(self) -> list[Datum]: ...

    def remove_first(self, count: int) -> None: ...

    def __len__(self) -> int: ...


class DatumBuffer:
    """A bounded FIFO of datums; full means the oldest go (and are counted)."""

    def __init__(self, max_datums: int) -> None:
        if max_datums < 1:
            raise ValueError("max_datums must be at least 1")
        self.max_datums = max_datums
        self._datums: deque[Datum] = deque()
        self.dropped = 0

    def extend(self, datums: Iterable[Datum]) -> int:
        """Add datums; returns how many old ones were dropped to make room."""
        dropped = 0
        for datum in datums:
            if len(self._datums) >= self.max_datums:
                self._datums.popleft()
                dropped += 1
            self._datums.append(datum)
        self.dropped += dropped
        return dropped

    def snapshot(self) -> list[Datum]:
        return list(self._datums)

    def remove_first(self, count: int) -> None:
        for _ in range(min(count, len(self._datums))):
            self._datums.popleft()

    def __len__(self) -> int:
        return len(self._datums)


class BufferedSink(ABC, Generic[CallT]):
    """Buffered datums → calls of one API: ``write`` buffers and flushes what CloudWatch
    takes now; a call's datums leave the buffer once it was accepted (or refused as invalid).
    Subclasses say how datums become calls (``pack``) and how a call is sent (``send``)."""

    name: ClassVar[str]
    operation: ClassVar[str]  # the API call, in log events: "<operation>_rejected"

    def __init__(
        self,
        *,
        buffer: MetricBuffer,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.buffer = buffer
        self._backoff = backoff or Backoff(initial_s=1.0, max_s=60.0)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._delays = self._backoff.delays(self._rng)
        self._not_before = 0.0
        self.calls = 0
        self.datums_sent = 0
        self.api_errors = 0
        self.rejected = 0

    @abstractmethod
    def pack(self, datums: list[Datum]) -> list[CallT]:
        """Calls in datum order, each covering the next ``call.datums`` datums."""

    @abstractmethod
    async def send(self, call: CallT) -> int:
        """Send one call; returns how many of its datums CloudWatch refused in an accepted call."""

    def invalid(self, datums: list[Datum]) -> list[int]:  # noqa: ARG002 - none known here
        """Indices of the datums the API refuses as invalid (checked without sending)."""
        return []

    async def close(self) -> None:
        """The client is closed by its owner (the worker's resources)."""

    async def write(self, batch: list[Datum]) -> None:
        """Buffer the batch, then send what CloudWatch takes now (never raises on an outage)."""
        self.buffer.extend(batch)
        await self.flush()

    async def flush(self) -> bool:
        """Send the buffer in packed calls; True when it is empty afterwards."""
        if time.monotonic() < self._not_before:
            return False
        pending = self.buffer.snapshot()
        try:
            calls = self.pack(pending)
        except DatumTooLargeError as exc:  # cannot happen with ≤150 values a datum: say so
            _log.error("datum_too_large", error=str(exc))
            self.rejected += len(pending)
            self.buffer.remove_first(len(pending))
            return True
        start = 0
        for call in calls:
            datums = pending[start : start + call.datums]
            start += call.datums
            if not await self._deliver(call, datums):
                return False
            self.buffer.remove_first(call.datums)
        self._delays = self._backoff.delays(self._rng)  # a success resets the backoff
        return len(self.buffer) == 0

    async def _deliver(self, call: CallT, datums: list[Datum]) -> bool:
        """Send one call; False when an outage deferred it (its datums stay buffered)."""
        try:
            refused = await self.send(call)
        except ParamValidationError:  # the client refused it before sending: never transient
            self.api_errors += 1
            return await self._send_valid(call, datums, "ParamValidationError")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            self.api_errors += 1
            if code in _TRANSIENT_CODES or _status(exc) >= HTTP_SERVER_ERROR:
                self._defer(code or "server_error")
                return False
            if code in _INVALID_CODES:
                return await self._send_valid(call, datums, code)
            # refused otherwise: retrying cannot help; drop this call, say what it was
            _log.error(f"{self.operation}_rejected", code=code, datums=call.datums, error=str(exc))
            self.rejected += call.datums
        except (BotoCoreError, OSError) as exc:
            self.api_errors += 1
            self._defer(type(exc).__name__)
            return False
        else:
            self.calls += 1
            self.datums_sent += call.datums - refused
            self.rejected += refused
        return True

    async def _send_valid(self, call: CallT, datums: list[Datum], code: str) -> bool:
        """A call refused as invalid: drop the datums at fault, send the others now.

        True when the call is done with (its datums may leave the buffer); False when sending
        the valid ones met an outage (deferred: everything stays buffered, and the next cycle
        finds the invalid ones again, without a network call, and counts them then).
        """
        bad = set(self.invalid(datums))
        if not bad:  # nothing found at fault: drop the call whole rather than retry it forever
            _log.error(f"{self.operation}_rejected", code=code, datums=call.datums)
            self.rejected += call.datums
            return True
        good = [datum for i, datum in enumerate(datums) if i not in bad]
        # a subset of one call packs into one call, so an outage here resends nothing twice
        sent = 0
        for part in self.pack(good) if good else []:
            try:
                refused = await self.send(part)
            except ClientError as exc:
                part_code = exc.response.get("Error", {}).get("Code", "")
                if part_code in _TRANSIENT_CODES or _status(exc) >= HTTP_SERVER_ERROR:
                    self._defer(part_code or "server_error")
                    return False
                # refused again with the culprits gone: give the rest up, do not loop
                _log.error(
                    f"{self.operation}_rejected", code=part_code, datums=part.datums, error=str(exc)
                )
                self.rejected += part.datums
                continue
            except ParamValidationError:
                _log.error(
                    f"{self.operation}_rejected", code="ParamValidationError", datums=part.datums
                )
                self.rejected += part.datums
                continue
            except (BotoCoreError, OSError) as exc:
                self._defer(type(exc).__name__)
                return False
            self.calls += 1
            sent += part.datums - refused
            self.rejected += refused
        self.datums_sent += sent
        self.rejected += len(bad)
        # the names only (no values, no botocore report, which can quote them), a few of them
        names = sorted({datums[i].name[:255] for i in bad})
        _log.error(
            f"{self.operation}_datums_invalid",
            code=code,
            datums=len(bad),
            sent=sent,
            metrics=names[:_LOGGED_NAMES],
        )
        return True

    def _defer(self, reason: str) -> None:
        delay = next(self._delays)
        self._not_before = time.monotonic() + delay
        _log.warning(
            "cloudwatch_unavailable",
            reason=reason,
            retry_in_s=round(delay, 2),
            buffered=len(self.buffer),
        )


class CloudWatchMetricsSink(BufferedSink[Call]):
    """Sends buffered datums to one namespace with PutMetricData."""

    name = "cloudwatch-metrics"
    operation = "put_metric_data"

    def __init__(
        self,
        client: CloudWatchClient,
        *,
        namespace: str,
        buffer: MetricBuffer,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(buffer=buffer, backoff=backoff, rng=rng)
        self._client = client
        self._namespace = namespace
        self._sizer = RequestSizer(namespace)
        self._validator = DatumValidator(namespace)

    async def ping(self) -> None:
        await self._client.list_metrics(Namespace=self._namespace, RecentlyActive="PT3H")

    def pack(self, datums: list[Datum]) -> list[Call]:
        return list(pack(datums, self._sizer))

    def invalid(self, datums: list[Datum]) -> list[int]:
        return self._validator.invalid(datums)

    async def send(self, call: Call) -> int:
        await self._client.put_metric_data(
            Namespace=self._namespace,
            MetricData=call.metric_data,  # type: ignore[arg-type]
        )
        return 0  # PutMetricData takes a call whole or refuses it


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
