"""Datums packed into PutMetricData calls within 1,000 datums and 1 MB, measured by botocore."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from indutech_metrics_shipper.batching import (
    MAX_CALL_BYTES,
    DatumValidator,
    RequestSizer,
    pack,
)
from indutech_metrics_shipper.convert import MAX_VALUES_PER_DATUM, Datum, StatisticSet
from indutech_metrics_shipper.errors import DatumTooLargeError
from indutech_metrics_shipper.sinks import BufferedSink, CloudWatchMetricsSink, DatumBuffer


@pytest.fixture(scope="module")
def sizer() -> RequestSizer:
    return RequestSizer("InduTech/Flows")


def plain(count: int) -> list[Datum]:
    return [
        Datum(
            f"indutech_metric_{i % 50}",
            (("stream", f"s{i}"), ("worker", "iot-ingest")),
            2e9,
            "Count",
            value=float(i),
        )
        for i in range(count)
    ]


def wide(count: int) -> list[Datum]:
    values = tuple(float(v) for v in range(MAX_VALUES_PER_DATUM))
    return [
        Datum(
            "indutech_batch_duration_seconds",
            (("worker", f"w{i}"),),
            2e9,
            "Seconds",
            values=values,
            counts=tuple(1.0 + v for v in values),
        )
        for i in range(count)
    ]


class TestPack:
    def test_10000_series_take_the_minimum_of_10_calls(self, sizer: RequestSizer) -> None:
        calls = list(pack(plain(10_000), sizer))
        assert [len(c.metric_data) for c in calls] == [1000] * 10
        assert all(c.body_bytes <= MAX_CALL_BYTES for c in calls)

    def test_wide_histograms_split_on_bytes(self, sizer: RequestSizer) -> None:
        calls = list(pack(wide(1000), sizer))
        assert len(calls) > 1  # 1,000 full histograms are ~2.8 MB
        assert all(c.body_bytes <= MAX_CALL_BYTES for c in calls)
        assert sum(len(c.metric_data) for c in calls) == 1000
        # greedy: every call but the last is near the limit
        assert all(c.body_bytes > MAX_CALL_BYTES * 0.95 for c in calls[:-1])

    def test_the_measured_size_is_botocores(self, sizer: RequestSizer) -> None:
        [call] = pack(plain(10), sizer)
        assert call.body_bytes == sizer.body_bytes(call.metric_data)

    def test_order_is_kept(self, sizer: RequestSizer) -> None:
        datums = plain(2500)
        names = [d["Dimensions"][0]["Value"] for c in pack(datums, sizer) for d in c.metric_data]
        assert names == [f"s{i}" for i in range(2500)]

    def test_a_datum_that_fits_no_call_is_refused_by_name(self, sizer: RequestSizer) -> None:
        with pytest.raises(DatumTooLargeError, match="indutech_batch_duration_seconds alone"):
            list(pack(wide(1), sizer, max_bytes=1000))

    def test_nothing_to_send_no_call(self, sizer: RequestSizer) -> None:
        assert list(pack([], sizer)) == []


# -- the sizes against the body botocore's client really writes -------------------------------

NAMESPACE = "InduTech/Flows"


class BodyCaptured(Exception):  # noqa: N818 - a signal, not an error
    def __init__(self, body: bytes) -> None:
        super().__init__("PutMetricData body captured")
        self.body = body


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A real botocore CloudWatch client that stops each call once it has serialized (and
    validated) its body, before compression and before any network: the body as sent."""
    client = botocore.session.get_session().create_client(
        "cloudwatch",
        region_name="eu-west-1",
        aws_access_key_id="unused",
        aws_secret_access_key="unused",  # never sent: each call stops before the network
    )

    def capture(params: dict[str, Any], **_: Any) -> None:
        raise BodyCaptured(params["body"])

    client.meta.events.register("before-call.cloudwatch.PutMetricData", capture)
    yield client
    client.close()


def sent_bytes(client: Any, metric_data: list[dict[str, Any]]) -> int:
    with pytest.raises(BodyCaptured) as captured:
        client.put_metric_data(Namespace=NAMESPACE, MetricData=metric_data)
    return len(captured.value.body)


PAD_DIMENSIONS = 4  # up to 4 x 1,023 characters of padding: more than a wide datum's ~2 KB


def padded(count: int, pad: int) -> list[Datum]:
    """``count`` wide histograms, the last one's dimension values longer by ``pad`` characters
    (each one byte more of JSON body)."""
    datums = wide(count)
    last = datums[-1]
    share, extra = divmod(pad, PAD_DIMENSIONS)
    dimensions = tuple((f"d{i}", "x" * (1 + share + (i < extra))) for i in range(PAD_DIMENSIONS))
    datums[-1] = Datum(last.name, dimensions, last.timestamp, last.unit, values=last.values,
                       counts=last.counts)  # fmt: skip
    return datums


@pytest.fixture(scope="module")
def at_limit(client: Any) -> tuple[int, int]:
    """(count, pad) for which the body botocore's client writes is exactly MAX_CALL_BYTES."""

    def body(count: int, pad: int) -> int:
        return sent_bytes(client, [d.to_api() for d in padded(count, pad)])

    one = body(1, 0)
    count = (MAX_CALL_BYTES - one) // (body(2, 0) - one) + 1
    while body(count, 0) > MAX_CALL_BYTES:
        count -= 1
    while body(count + 1, 0) <= MAX_CALL_BYTES:
        count += 1
    pad = MAX_CALL_BYTES - body(count, 0)
    assert body(count, pad) == MAX_CALL_BYTES
    return count, pad


class TestTheOneMegabyteLimit:
    """Calls at the limit, the bytes counted by botocore's own client (the protocol it uses)."""

    @pytest.mark.parametrize("under", [0, 1])
    def test_a_body_at_or_just_under_1_mb_is_one_call(
        self, sizer: RequestSizer, client: Any, at_limit: tuple[int, int], under: int
    ) -> None:
        count, pad = at_limit
        [call] = pack(padded(count, pad - under), sizer)
        assert len(call.metric_data) == count
        assert call.body_bytes == sent_bytes(client, call.metric_data) == MAX_CALL_BYTES - under

    def test_a_body_one_byte_over_is_two_calls_within_it(
        self, sizer: RequestSizer, client: Any, at_limit: tuple[int, int]
    ) -> None:
        count, pad = at_limit
        datums = padded(count, pad + 1)
        assert sent_bytes(client, [d.to_api() for d in datums]) == MAX_CALL_BYTES + 1
        calls = list(pack(datums, sizer))
        assert [len(c.metric_data) for c in calls] == [count - 1, 1]
        for call in calls:
            assert call.body_bytes == sent_bytes(client, call.metric_data) <= MAX_CALL_BYTES

    def test_1000_datums_are_one_call_1001_two(self, sizer: RequestSizer) -> None:
        assert [len(c.metric_data) for c in pack(plain(1000), sizer)] == [1000]
        assert [len(c.metric_data) for c in pack(plain(1001), sizer)] == [1000, 1]

    def test_the_sizer_uses_the_protocol_the_client_sends(
        self, sizer: RequestSizer, client: Any
    ) -> None:
        assert sizer.protocol == client.meta.service_model.resolved_protocol
        assert sizer.exact  # JSON: sizes computed, not serialized per datum


FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.sampled_from([0.005, 0.1, 1e-300, 1e300, 2.5]),
)
NAMES = st.text(min_size=1, max_size=40)  # any Unicode: json.dumps escapes it as botocore does
DATUMS = st.builds(
    lambda name, dims, stamp, kind, value, pairs, stats: Datum(
        name,
        tuple(sorted(dims.items())),
        stamp,
        "Seconds",
        value=value if kind == "value" else None,
        values=tuple(v for v, _ in pairs) if kind == "values" else (),
        counts=tuple(c for _, c in pairs) if kind == "values" else (),
        statistics=StatisticSet(*stats) if kind == "statistics" else None,
    ),
    NAMES,
    st.dictionaries(NAMES, st.text(min_size=1, max_size=60), max_size=30),
    st.floats(min_value=1.6e9, max_value=2.2e9) | st.integers(1_600_000_000, 2_200_000_000),
    st.sampled_from(["value", "values", "statistics"]),
    FLOATS,
    st.lists(st.tuples(FLOATS, FLOATS), min_size=1, max_size=MAX_VALUES_PER_DATUM),
    st.tuples(FLOATS, FLOATS, FLOATS, FLOATS),
)


class TestComputedSizes:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(datums=st.lists(DATUMS, min_size=1, max_size=40), limit=st.sampled_from([8_000, 60_000]))
    def test_every_call_is_the_size_botocore_sends(
        self, sizer: RequestSizer, client: Any, datums: list[Datum], limit: int
    ) -> None:
        """Computed (under half the limit) or measured (over it), each call's size is the body
        botocore's client writes, and within the limit."""
        calls = list(pack(datums, sizer, max_bytes=limit))
        assert sum(len(c.metric_data) for c in calls) == len(datums)
        for call in calls:
            assert call.body_bytes == sent_bytes(client, call.metric_data)
            assert call.body_bytes <= limit or len(call.metric_data) == 1

    def test_non_finite_values_are_sized_as_botocore_writes_them(self, sizer: RequestSizer) -> None:
        api = [{"MetricName": "m", "Value": math.inf, "Values": [math.nan], "Counts": [1.0]}]
        [call] = pack([Datum("m", (), 2e9, value=-math.inf)], sizer)
        assert call.body_bytes == sizer.body_bytes(call.metric_data)
        assert sizer.datum_bytes(api[0]) + sizer.envelope_bytes == sizer.body_bytes(api)

    @pytest.mark.parametrize("protocol", ["smithy-rpc-v2-cbor", "query"])
    def test_other_protocols_are_measured_and_within_the_limit(self, protocol: str) -> None:
        other = RequestSizer(NAMESPACE, protocol=protocol)
        assert not other.exact
        calls = list(pack(wide(400), other))
        assert len(calls) > 1
        assert all(c.body_bytes == other.body_bytes(c.metric_data) <= MAX_CALL_BYTES for c in calls)


# -- datums the API refuses: found, dropped, the rest sent -------------------------------------


class TestDatumValidator:
    """The datums CloudWatch refuses, found one by one without sending anything."""

    @pytest.mark.parametrize(
        ("datum", "problem"),
        [
            (Datum("m" * 256, (), 0.0, value=1.0), "MetricName longer than 255"),
            (Datum("m", (("d" * 256, "v"),), 0.0, value=1.0), "dimension name longer than 255"),
            (Datum("m", (("d", "v" * 1025),), 0.0, value=1.0), "dimension value longer than 1024"),
            (Datum("m", (("d", ""),), 0.0, value=1.0), "Invalid length for parameter"),
        ],
    )
    def test_what_the_api_refuses_is_named(self, datum: Datum, problem: str) -> None:
        assert problem in (DatumValidator(NAMESPACE).problem(datum) or "")

    def test_datums_at_the_limits_are_valid(self) -> None:
        datum = Datum("m" * 255, (("d" * 255, "v" * 1024),), 0.0, value=1.0)
        validator = DatumValidator(NAMESPACE)
        assert validator.problem(datum) is None
        assert validator.invalid([datum, Datum("", (), 0.0, value=1.0), datum]) == [1]


class RecordingClient:
    """A real botocore client, awaited like the shipper's: botocore validates each call and
    serializes it; the call then stops before the network, answered as CloudWatch would (a
    name over 255 characters refused whole as InvalidParameterValue, anything else taken)."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []  # the metric names of each call that reached the wire
        self._client: Any = botocore.session.get_session().create_client(
            "cloudwatch",
            region_name="eu-west-1",
            aws_access_key_id="unused",
            aws_secret_access_key="unused",  # never sent: each call stops before the network
        )
        answer: Any = self._answer  # a before-call handler that answers stops the call
        self._client.meta.events.register("before-call.cloudwatch.PutMetricData", answer)

    def _answer(self, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        body = params["body"]
        names = [d["MetricName"] for d in json.loads(body)["MetricData"]]
        if any(len(name) > 255 for name in names):
            error = {"Code": "InvalidParameterValue", "Message": "The MetricName is too long"}
            return _Response(400), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}
        self.sent.append(names)
        return _Response(200), {"ResponseMetadata": {"HTTPStatusCode": 200}}

    async def put_metric_data(self, **params: Any) -> Any:
        return self._client.put_metric_data(**params)

    def close(self) -> None:
        self._client.close()


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}


@pytest.fixture
def recording() -> Iterator[RecordingClient]:
    client = RecordingClient()
    yield client
    client.close()


def sink_over(recording: RecordingClient) -> CloudWatchMetricsSink:
    client: Any = recording  # awaited like aiobotocore's client, for PutMetricData only
    return CloudWatchMetricsSink(client, namespace=NAMESPACE, buffer=DatumBuffer(max_datums=100))


def named(*names: str) -> list[Datum]:
    return [Datum(name, (("d", "v"),), 1_700_000_000.0, value=1.0) for name in names]


class TestInvalidDatumsInASink:
    """A refused datum is dropped and counted once; its call's other datums go in this cycle."""

    async def test_a_datum_botocore_refuses_does_not_block_the_others(
        self, recording: RecordingClient
    ) -> None:
        sink = sink_over(recording)
        bad = Datum("bad", (("d", ""),), 1_700_000_000.0, value=1.0)
        with capture_logs() as logs:
            await sink.write([*named("a"), bad, *named("b", "c")])
        assert recording.sent == [["a", "b", "c"]]
        assert (len(sink.buffer), sink.datums_sent, sink.rejected) == (0, 3, 1)
        invalid = [e for e in logs if e["event"] == "put_metric_data_datums_invalid"]
        assert [(e["code"], e["metrics"], e["datums"]) for e in invalid] == [
            ("ParamValidationError", ["bad"], 1)
        ]
        assert not any(e["event"] == "cloudwatch_unavailable" for e in logs)

    async def test_a_call_cloudwatch_refuses_loses_only_its_invalid_datums(
        self, recording: RecordingClient
    ) -> None:
        sink = sink_over(recording)
        with capture_logs() as logs:
            await sink.write(named("a", "x" * 256, "b"))
        assert recording.sent == [["a", "b"]]
        assert (len(sink.buffer), sink.datums_sent, sink.rejected) == (0, 2, 1)
        invalid = [e for e in logs if e["event"] == "put_metric_data_datums_invalid"]
        assert [(e["code"], e["datums"]) for e in invalid] == [("InvalidParameterValue", 1)]


@dataclass(frozen=True)
class OneDatum:
    datum: Datum

    @property
    def datums(self) -> int:
        return 1


class ValidatingSink(BufferedSink[OneDatum]):
    """Any buffered sink (EMF's too) whose client refuses a call before sending it, one datum
    a call, with no way to tell the datums at fault (``invalid`` left as the base's)."""

    name = "validating"
    operation = "put_things"

    def __init__(self) -> None:
        super().__init__(buffer=DatumBuffer(max_datums=100))
        self.sent: list[str] = []

    def pack(self, datums: list[Datum]) -> list[OneDatum]:
        return [OneDatum(datum) for datum in datums]

    async def send(self, call: OneDatum) -> int:
        if call.datum.name == "bad":
            raise ParamValidationError(report="Invalid length for parameter x")
        self.sent.append(call.datum.name)
        return 0


async def test_a_call_refused_by_validation_is_dropped_not_retried_as_an_outage() -> None:
    sink = ValidatingSink()
    with capture_logs() as logs:
        await sink.write(named("a", "bad", "b"))
    assert sink.sent == ["a", "b"]
    assert (len(sink.buffer), sink.rejected) == (0, 1)
    assert [e["event"] for e in logs] == ["put_things_rejected"]
