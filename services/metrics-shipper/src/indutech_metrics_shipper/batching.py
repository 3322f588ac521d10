"""Datums packed into as few PutMetricData calls as its limits allow.

Limits: 1,000 datums and 1 MB of request body a call. The body's size is
measured with botocore's own serializer for the service's protocol (CBOR
today, the query protocol before), not guessed: each datum's encoded size is
measured once, and a packed call is measured whole before it is sent, so a
call never exceeds the limit even if the encoding changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore import serialize
from botocore.model import OperationModel

from indutech_metrics_shipper.convert import Datum
from indutech_metrics_shipper.errors import DatumTooLargeError

MAX_DATUMS_PER_CALL = 1000
MAX_CALL_BYTES = 1_000_000  # "1 MB" (decimal, the stricter reading)
# CBOR grows an array's length header by a few bytes past 23, 255 and 65,535
# items, and a map by as much for its keys: a margin that covers both.
_ENVELOPE_SLACK = 16


@dataclass(frozen=True)
class Call:
    """One PutMetricData request: its datums in API form and its measured body size."""

    metric_data: list[dict[str, Any]]
    body_bytes: int

    @property
    def datums(self) -> int:
        return len(self.metric_data)


class RequestSizer:
    """Sizes PutMetricData bodies exactly as botocore will send them."""

    def __init__(self, namespace: str) -> None:
        session = botocore.session.get_session()
        model = session.get_service_model("cloudwatch")
        self._operation: OperationModel = model.operation_model("PutMetricData")
        self._serializer = serialize.create_serializer(model.protocol)
        self.namespace = namespace
        self._empty = self.body_bytes([])

    def body_bytes(self, metric_data: Sequence[dict[str, Any]]) -> int:
        request = self._serializer.serialize_to_request(
            {"Namespace": self.namespace, "MetricData": list(metric_data)}, self._operation
        )
        body = request["body"]
        return len(body if isinstance(body, bytes) else str(body).encode())

    def datum_bytes(self, datum: dict[str, Any]) -> int:
        """What one datum adds to a body (its encoding alone, less the envelope)."""
        return self.body_bytes([datum]) - self._empty

    @property
    def envelope_bytes(self) -> int:
        return self._empty


def pack(
    datums: Sequence[Datum],
    sizer: RequestSizer,
    *,
    max_datums: int = MAX_DATUMS_PER_CALL,
    max_bytes: int = MAX_CALL_BYTES,
) -> Iterator[Call]:
    """Calls in datum order, each within both limits; a datum that fits no call raises.

    Greedy first-fit in order is optimal here: the count limit binds for plain
    values (10,000 series → 10 calls), the size limit only for wide histograms.
    """
    batch: list[dict[str, Any]] = []
    size = sizer.envelope_bytes + _ENVELOPE_SLACK
    for datum in datums:
        api = datum.to_api()
        extra = sizer.datum_bytes(api)
        if sizer.envelope_bytes + _ENVELOPE_SLACK + extra > max_bytes:
            raise DatumTooLargeError(
                f"{datum.name} alone encodes to {extra} bytes, over the {max_bytes}-byte call limit"
            )
        if batch and (len(batch) >= max_datums or size + extra > max_bytes):
            yield from _measured(batch, sizer, max_bytes)
            batch, size = [], sizer.envelope_bytes + _ENVELOPE_SLACK
        batch.append(api)
        size += extra
    if batch:
        yield from _measured(batch, sizer, max_bytes)


def _measured(batch: list[dict[str, Any]], sizer: RequestSizer, max_bytes: int) -> Iterator[Call]:
    """The batch as one call, measured whole; halved if the estimate fell short."""
    body = sizer.body_bytes(batch)
    if body <= max_bytes or len(batch) == 1:
        yield Call(batch, body)
        return
    half = len(batch) // 2
    yield from _measured(batch[:half], sizer, max_bytes)
    yield from _measured(batch[half:], sizer, max_bytes)
