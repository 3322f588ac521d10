"""Datums packed into as few PutMetricData calls as its limits allow.

Limits: 1,000 datums and 1 MB of request body a call. The body counted is the
one the client sends: botocore serializes in the first protocol of the service
model that it ranks highest (``ServiceModel.resolved_protocol``; for CloudWatch
with botocore 1.43 that is JSON, although the model lists CBOR first), so the
sizer uses that protocol too.

For JSON the size is computed, not serialized per datum: botocore writes the
body as ``json.dumps({"Namespace": …, "MetricData": [d1, d2, …]})``, so a call
is the empty envelope plus each datum's own ``json.dumps`` length plus 2 bytes
(", ") between datums, each datum written as botocore writes it (timestamps as
epoch seconds, non-finite floats as strings). This replaced running botocore's
validating serializer once per datum and once per call (about 0.8 CPU-s a cycle
of 10,000 series); the client still validates each call when it sends it. At
start the sizer checks the computation against botocore's serializer on sample
datums, and a call computed over half the limit is serialized once by botocore
and checked before it is sent (halved if over), so a botocore whose JSON
differed could not make a call exceed the limit. Any other protocol (CBOR,
query) is measured datum by datum with botocore's serializer, as before.
"""

from __future__ import annotations

import calendar
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlencode

import botocore.session
from botocore import serialize
from botocore.model import ListShape, OperationModel, StructureShape
from botocore.utils import parse_to_aware_datetime
from botocore.validate import ParamValidator

from indutech_metrics_shipper.convert import Datum
from indutech_metrics_shipper.errors import DatumTooLargeError

MAX_DATUMS_PER_CALL = 1000
MAX_CALL_BYTES = 1_000_000  # "1 MB" (decimal, the stricter reading)
# Measured protocols only: CBOR grows an array's length header by a few bytes past
# 23, 255 and 65,535 items, and a map by as much for its keys: a margin for both.
_ENVELOPE_SLACK = 16
_JSON_SEPARATOR = len(", ")  # json.dumps's default item separator
_STAMP_CACHE = 64  # distinct timestamps remembered (a scrape's datums share one)


@dataclass(frozen=True)
class Call:
    """One PutMetricData request: its datums in API form and its body size."""

    metric_data: list[dict[str, Any]]
    body_bytes: int

    @property
    def datums(self) -> int:
        return len(self.metric_data)


class RequestSizer:
    """Sizes PutMetricData bodies exactly as botocore will send them.

    ``exact`` is True when datum sizes are computed (JSON, checked against
    botocore at start), False when each datum is measured by botocore's serializer.
    """

    def __init__(self, namespace: str, *, protocol: str | None = None) -> None:
        session = botocore.session.get_session()
        model = session.get_service_model("cloudwatch")
        self._operation: OperationModel = model.operation_model("PutMetricData")
        # what the client serializes with (botocore's args.py: service_model.resolved_protocol)
        self.protocol = protocol or model.resolved_protocol
        # sizes only: the client validates each call when it sends it
        self._serializer = serialize.create_serializer(self.protocol, include_validation=False)
        self.namespace = namespace
        self._empty = self.body_bytes([])
        self._stamps: dict[datetime, int | float] = {}
        self.exact = self.protocol == "json" and self._json_agrees()

    def body_bytes(self, metric_data: Sequence[Mapping[str, Any]]) -> int:
        """The body botocore's serializer writes for these datums (what the limit counts)."""
        request = self._serializer.serialize_to_request(
            {"Namespace": self.namespace, "MetricData": list(metric_data)}, self._operation
        )
        body = request["body"]
        if isinstance(body, dict):  # the query protocol: form-encoded when sent
            return len(urlencode(list(body.items()), doseq=True).encode())
        return len(body if isinstance(body, bytes) else str(body).encode())

    def datum_bytes(self, datum: Mapping[str, Any]) -> int:
        """What one datum adds to a body (its encoding alone, less the envelope and, in
        JSON, the separator before it)."""
        if self.exact:
            try:
                return self._json_bytes(datum)
            except (TypeError, ValueError):
                pass  # a value json writes otherwise than botocore (a Decimal): measure it
        return self.body_bytes([datum]) - self._empty

    @property
    def envelope_bytes(self) -> int:
        return self._empty

    @property
    def separator_bytes(self) -> int:
        """Bytes between two datums of a body, when sizes are computed."""
        return _JSON_SEPARATOR if self.exact else 0

    def _json_bytes(self, datum: Mapping[str, Any]) -> int:
        form = dict(datum)
        stamp = form.get("Timestamp")
        if stamp is not None:
            form["Timestamp"] = self._epoch(stamp)
        if "Value" in form:
            form["Value"] = _number(form["Value"])
        for key in ("Values", "Counts"):
            items = form.get(key)
            if items is not None and not all(map(math.isfinite, items)):
                form[key] = [_number(v) for v in items]
        statistics = form.get("StatisticValues")
        if statistics is not None:
            form["StatisticValues"] = {k: _number(v) for k, v in statistics.items()}
        # ensure_ascii (json.dumps's default, as botocore calls it): one byte a character
        return len(json.dumps(form))

    def _epoch(self, stamp: Any) -> int | float:  # what botocore takes: datetime, epoch, ISO
        """A timestamp as botocore's JSON serializer writes it (its default precision:
        whole seconds, or microseconds when there are any)."""
        if isinstance(stamp, datetime):  # a scrape's datums share one: remembered
            known = self._stamps.get(stamp)
            if known is not None:
                return known
        moment = parse_to_aware_datetime(stamp)
        seconds = calendar.timegm(moment.timetuple())
        epoch = (seconds * 10**6 + moment.microsecond) / 10**6 if moment.microsecond else seconds
        if isinstance(stamp, datetime):
            if len(self._stamps) >= _STAMP_CACHE:
                self._stamps.clear()
            self._stamps[stamp] = epoch
        return epoch

    def _json_agrees(self) -> bool:
        """The computed sizes equal botocore's on datums of every shape, or measure."""
        samples: list[dict[str, Any]] = [
            Datum("a", (("worker", "iot-ingest"),), 1_733_000_000.25, "Count", value=3.5).to_api(),
            Datum("b_seconds", (), 1_733_000_000.0, "Seconds", value=7).to_api(),
            Datum(
                "c", (("é", "ü€😀"),), 2e9 + 1e-6, values=(0.005, 10.0), counts=(1, 2.5)
            ).to_api(),
            {"MetricName": "d", "Value": math.inf, "Values": [math.nan], "Counts": [-math.inf]},
            {
                "MetricName": "e",
                "Timestamp": datetime(2026, 12, 4, 23, 59, 59, 123456, tzinfo=UTC),
                "StatisticValues": {"SampleCount": 2, "Sum": 0.1, "Minimum": 0, "Maximum": 1e300},
                "StorageResolution": 1,
            },
        ]
        try:
            sizes = [self._json_bytes(sample) for sample in samples]
        except (TypeError, ValueError):
            return False
        together = self._empty + sum(sizes) + _JSON_SEPARATOR * (len(sizes) - 1)
        return together == self.body_bytes(samples) and all(
            self._empty + size == self.body_bytes([sample])
            for size, sample in zip(sizes, samples, strict=True)
        )


def _number(value: Any) -> Any:
    """A number as botocore's JSON serializer passes it to json.dumps."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return value


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
    separator = sizer.separator_bytes
    empty = sizer.envelope_bytes + (0 if sizer.exact else _ENVELOPE_SLACK)
    batch: list[dict[str, Any]] = []
    size = empty
    for datum in datums:
        api = datum.to_api()
        extra = sizer.datum_bytes(api)
        if empty + extra > max_bytes:
            raise DatumTooLargeError(
                f"{datum.name} alone encodes to {extra} bytes, over the {max_bytes}-byte call limit"
            )
        if batch and (len(batch) >= max_datums or size + separator + extra > max_bytes):
            yield from _checked(batch, size, sizer, max_bytes)
            batch, size = [], empty
        if batch:
            size += separator
        batch.append(api)
        size += extra
    if batch:
        yield from _checked(batch, size, sizer, max_bytes)


def _checked(
    batch: list[dict[str, Any]], size: int, sizer: RequestSizer, max_bytes: int
) -> Iterator[Call]:
    """The batch as one call: a computed size far below the limit is taken as it is (it
    equals botocore's, checked at start); near the limit, or estimated, it is measured."""
    if sizer.exact and size <= max_bytes // 2:
        yield Call(batch, size)
        return
    yield from _measured(batch, sizer, max_bytes)


def _measured(batch: list[dict[str, Any]], sizer: RequestSizer, max_bytes: int) -> Iterator[Call]:
    """The batch as one call, measured whole by botocore's serializer; halved if over."""
    body = sizer.body_bytes(batch)
    if body <= max_bytes or len(batch) == 1:
        yield Call(batch, body)
        return
    half = len(batch) // 2
    yield from _measured(batch[:half], sizer, max_bytes)
    yield from _measured(batch[half:], sizer, max_bytes)


class DatumValidator:
    """Finds the datums botocore's client-side validation refuses (a metric name over 255
    characters, an empty or over-long dimension value, …), one datum at a time, without
    sending anything: a refused call is split into the datums to drop and the ones to send."""

    def __init__(self, namespace: str) -> None:
        model = botocore.session.get_session().get_service_model("cloudwatch")
        shape = model.operation_model("PutMetricData").input_shape
        if shape is None:  # botocore's model always has it: a broken install otherwise
            raise RuntimeError("botocore's CloudWatch model has no PutMetricData input: reinstall")
        self._shape: StructureShape = shape
        self._validator = ParamValidator()
        self.namespace = namespace
        # botocore checks minimum lengths only; CloudWatch refuses the maximums server-side
        # (InvalidParameterValue), which would cost the whole call: check them here too
        datum = cast("StructureShape", cast("ListShape", shape.members["MetricData"]).member)
        dimension = cast("StructureShape", cast("ListShape", datum.members["Dimensions"]).member)
        self.max_name = int(datum.members["MetricName"].metadata["max"])
        self.max_dimension_name = int(dimension.members["Name"].metadata["max"])
        self.max_dimension_value = int(dimension.members["Value"].metadata["max"])

    def problem(self, datum: Datum) -> str | None:
        """botocore's report for this datum alone (its paths and limits), or None if valid."""
        if len(datum.name) > self.max_name:
            return f"MetricName longer than {self.max_name} characters"
        for name, value in datum.dimensions:
            if len(name) > self.max_dimension_name:
                return f"a dimension name longer than {self.max_dimension_name} characters"
            if len(value) > self.max_dimension_value:
                return f"a dimension value longer than {self.max_dimension_value} characters"
        report = self._validator.validate(
            {"Namespace": self.namespace, "MetricData": [datum.to_api()]}, self._shape
        )
        return report.generate_report() if report.has_errors() else None

    def invalid(self, datums: Sequence[Datum]) -> list[int]:
        """Indices of the datums the client would refuse."""
        return [i for i, datum in enumerate(datums) if self.problem(datum) is not None]
