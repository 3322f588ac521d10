"""Datums packed into PutMetricData calls within 1,000 datums and 1 MB, measured by botocore."""

from __future__ import annotations

import pytest

from indutech_metrics_shipper.batching import MAX_CALL_BYTES, RequestSizer, pack
from indutech_metrics_shipper.convert import MAX_VALUES_PER_DATUM, Datum
from indutech_metrics_shipper.errors import DatumTooLargeError


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
