"""EMF documents follow the specification's structure and limits, and carry every datum once.

The rules checked (CloudWatch "Specification: Embedded metric format"): a root ``_aws``
object with an integer ``Timestamp`` (ms) and ``CloudWatchMetrics``, an array of
directives each with a ``Namespace``, ``Dimensions`` (an array of dimension sets, each
an array of at most 30 keys) and ``Metrics`` (at most 100 definitions with a ``Name``
and an optional ``Unit``); every dimension key a string member of the root; every
metric name a member of the root holding a number, or a distribution object whose
``Values`` and ``Counts`` have the same length, at most 100.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_metrics_shipper.convert import Datum, StatisticSet
from indutech_metrics_shipper.emf import EmfEvent, documents, emf_problem
from indutech_metrics_shipper.logs import MAX_BATCH_BYTES, MAX_EVENTS, MAX_SPAN_MS
from indutech_metrics_shipper.sinks.emf import pack_emf

NS = "InduTech/Test"
UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Count", "None", "Percent"}


def check_emf(event: EmfEvent) -> dict[str, Any]:
    """The document, after checking it against the specification's structure."""
    document = json.loads(event.message)
    aws = document["_aws"]
    assert set(aws) == {"Timestamp", "CloudWatchMetrics"}
    assert isinstance(aws["Timestamp"], int)
    assert aws["Timestamp"] == event.timestamp_ms
    assert len(aws["CloudWatchMetrics"]) >= 1
    for directive in aws["CloudWatchMetrics"]:
        assert set(directive) == {"Namespace", "Dimensions", "Metrics"}
        assert 1 <= len(directive["Namespace"]) <= 255
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            for key in dimension_set:
                assert isinstance(document[key], str)
        assert 1 <= len(directive["Metrics"]) <= 100
        names = [m["Name"] for m in directive["Metrics"]]
        assert len(names) == len(set(names))
        for definition in directive["Metrics"]:
            assert set(definition) <= {"Name", "Unit", "StorageResolution"}
            assert definition.get("Unit", "None") in UNITS
            value = document[definition["Name"]]
            if isinstance(value, dict):
                assert set(value) == {"Values", "Counts", "Max", "Min", "Count", "Sum"}
                assert 1 <= len(value["Values"]) == len(value["Counts"]) <= 100
                assert value["Count"] == sum(value["Counts"])
                assert value["Min"] == min(value["Values"])
                assert value["Max"] == max(value["Values"])
            else:
                assert isinstance(value, int | float)
                assert math.isfinite(value)
    return dict(document)


def plain(name: str, value: float, t: float = 1_700_000_000.0, **dims: str) -> Datum:
    return Datum(name, tuple(sorted(dims.items())), t, unit="Count", value=value)


class TestDocuments:
    def test_one_scrape_of_one_series_set_is_one_document(self) -> None:
        datums = [plain(f"m{i}", float(i), worker="w", stream="s") for i in range(5)]
        [event] = documents(datums, NS)
        document = check_emf(event)
        assert document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["stream", "worker"]]
        assert {f"m{i}": document[f"m{i}"] for i in range(5)} == {f"m{i}": i for i in range(5)}
        assert document["worker"] == "w"
        assert event.timestamp_ms == 1_700_000_000_000

    def test_at_most_100_metrics_a_document(self) -> None:
        events = list(documents([plain(f"m{i}", 1.0, worker="w") for i in range(250)], NS))
        sizes = [len(check_emf(e)["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for e in events]
        assert sizes == [100, 100, 50]

    def test_a_name_twice_in_a_scrape_takes_two_documents(self) -> None:
        events = list(documents([plain("m", 1.0, worker="w"), plain("m", 2.0, worker="w")], NS))
        assert [check_emf(e)["m"] for e in events] == [1.0, 2.0]

    def test_other_times_and_dimension_sets_are_other_documents(self) -> None:
        datums = [plain("m", 1.0, worker="a"), plain("m", 1.0, worker="b"), plain("m", 1.0, 5.0)]
        events = list(documents(datums, NS))
        assert len(events) == 3
        assert check_emf(events[2])["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[]]

    def test_a_histogram_of_150_values_is_split_at_100_with_exact_counts_and_sums(self) -> None:
        values = tuple(float(v) for v in range(1, 151))
        counts = tuple(float(v % 7 + 1) for v in range(150))
        datum = Datum("latency_seconds", (("worker", "w"),), 1.0, "Seconds", None, values, counts)
        parts = [check_emf(e)["latency_seconds"] for e in documents([datum], NS)]
        assert [len(p["Values"]) for p in parts] == [100, 50]
        assert sum(p["Count"] for p in parts) == sum(counts)
        assert sum(p["Sum"] for p in parts) == sum(
            v * c for v, c in zip(values, counts, strict=True)
        )

    def test_what_emf_cannot_carry_is_named(self) -> None:
        stats = Datum("h", (), 1.0, statistics=StatisticSet(1.0, 2.0, 2.0, 2.0))
        assert emf_problem(stats) is not None
        assert emf_problem(plain("worker", 1.0, worker="w")) is not None
        assert emf_problem(plain("m", 1.0, worker="w")) is None
        with pytest.raises(ValueError, match="statistic-set"):
            list(documents([stats], NS))


class TestPackEmf:
    def test_calls_keep_put_log_events_limits_and_cover_every_datum(self) -> None:
        # 30,000 datums over 3,000 dimension sets and two times: ~6,000 events
        datums = [
            plain(f"metric_{i % 10}", float(i), 1_700_000_000.0 + (i // 15_000), pod=str(i // 10))
            for i in range(30_000)
        ]
        calls = pack_emf(datums, NS)
        assert sum(c.datums for c in calls) == 30_000
        for call in calls:
            assert len(call.events) <= MAX_EVENTS
            assert call.body_bytes <= MAX_BATCH_BYTES
            times = [e.timestamp_ms for e in call.events]
            assert times == sorted(times)
        assert len(calls) == math.ceil(sum(c.body_bytes for c in calls) / MAX_BATCH_BYTES)

    def test_events_more_than_24_hours_apart_go_in_other_calls(self) -> None:
        day = MAX_SPAN_MS / 1000
        calls = pack_emf([plain("m", 1.0, 0.0), plain("m", 1.0, day + 1)], NS)
        assert [c.datums for c in calls] == [1, 1]

    def test_datums_emf_cannot_carry_are_counted_in_their_call(self) -> None:
        stats = Datum("h", (), 1.0, statistics=StatisticSet(1.0, 2.0, 2.0, 2.0))
        [call] = pack_emf([plain("m", 1.0), stats, plain("n", 2.0)], NS)
        assert (call.datums, call.refused) == (3, 1)
        assert call.events[0].sources == (0, 2)  # indexes in the run the call covers


class TestEmfSetting:
    def test_emf_refuses_statistic_sets(self) -> None:
        with pytest.raises(ValidationError, match="no statistic-set form"):
            MetricsShipperSettings(sink="emf", histogram_mode="statistics")


names = st.sampled_from(["a", "b", "c", "records_out", "lag_seconds"])
dimension_sets = st.sampled_from([(), (("worker", "w"),), (("stream", "s"), ("worker", "w"))])
datum_strategy = st.one_of(
    st.builds(
        lambda n, d, t, v: Datum(n, d, t, "Count", v),
        names,
        dimension_sets,
        st.sampled_from([1.0, 2.0]),
        st.floats(-1e6, 1e6, allow_nan=False),
    ),
    st.builds(
        lambda n, d, t, vc: Datum(
            n, d, t, "Seconds", None, tuple(v for v, _ in vc), tuple(c for _, c in vc)
        ),
        names,
        dimension_sets,
        st.sampled_from([1.0, 2.0]),
        st.lists(
            st.tuples(st.floats(0, 100, allow_nan=False), st.integers(1, 9).map(float)),
            min_size=1,
            max_size=160,
        ),
    ),
)


class TestDocumentProperties:
    @settings(max_examples=80, deadline=None)
    @given(st.lists(datum_strategy, max_size=400))
    def test_every_document_is_valid_and_every_value_arrives_once(
        self, datums: list[Datum]
    ) -> None:
        wanted: dict[tuple[int, tuple[tuple[str, str], ...], str], list[float]] = defaultdict(list)
        for d in datums:
            key = (int(d.timestamp * 1000), d.dimensions, d.name)
            if d.values:
                wanted[key] += [*d.values, *d.counts]
            else:
                assert d.value is not None
                wanted[key].append(d.value)
        found: dict[tuple[int, tuple[tuple[str, str], ...], str], list[float]] = defaultdict(list)
        for event in documents(datums, NS):
            document = check_emf(event)
            directive = document["_aws"]["CloudWatchMetrics"][0]
            dims = tuple((k, document[k]) for k in directive["Dimensions"][0])
            for definition in directive["Metrics"]:
                value = document[definition["Name"]]
                key = (event.timestamp_ms, dims, definition["Name"])
                found[key] += (
                    [*value["Values"], *value["Counts"]] if isinstance(value, dict) else [value]
                )
        assert {k: sorted(v) for k, v in found.items()} == {k: sorted(v) for k, v in wanted.items()}
