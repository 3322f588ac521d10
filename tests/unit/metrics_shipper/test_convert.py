"""Prometheus exposition → CloudWatch datums: deltas, resets, first values, histograms, caps."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from structlog.testing import capture_logs

from indutech_metrics_shipper.convert import (
    MAX_VALUES_PER_DATUM,
    Converter,
    Datum,
    DimensionRules,
)

EPOCH = 1_000.0  # the shipper's state began here; series created after it are "new"


def text(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def by_name(datums: list[Datum], name: str) -> list[Datum]:
    return [d for d in datums if d.name == name]


def exposition(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def counter_text(value: float, created: float | None, labels: str = 'worker="a"') -> str:
    lines = ["# TYPE records_total counter", f"records_total{{{labels}}} {value}"]
    if created is not None:
        lines += ["# TYPE records_created gauge", f"records_created{{{labels}}} {created}"]
    return exposition(*lines)


class TestCounters:
    """Counters are shipped as increases, with resets and first values handled."""

    def test_a_new_series_ships_its_first_value(self) -> None:
        converter = Converter(state_epoch=EPOCH)
        report = converter.convert("t", counter_text(5, created=EPOCH + 10), scraped_at=EPOCH + 20)
        [datum] = by_name(report.datums, "records")
        assert datum.value == 5
        assert datum.unit == "Count"
        assert datum.dimensions == (("worker", "a"),)

    def test_a_series_older_than_the_state_is_a_baseline(self) -> None:
        """Its past may have been shipped by a shipper whose state was lost: not re-sent."""
        converter = Converter(state_epoch=EPOCH)
        report = converter.convert("t", counter_text(500, created=EPOCH - 60), scraped_at=EPOCH + 1)
        assert by_name(report.datums, "records") == []
        assert report.baselined == 1
        report = converter.convert(
            "t", counter_text(520, created=EPOCH - 60), scraped_at=EPOCH + 61
        )
        assert [d.value for d in by_name(report.datums, "records")] == [20]

    def test_increases_not_totals(self) -> None:
        converter = Converter(state_epoch=EPOCH)
        values = []
        for total in (5, 12, 12, 30):
            report = converter.convert("t", counter_text(total, EPOCH + 1), scraped_at=EPOCH + 60)
            values += [d.value for d in by_name(report.datums, "records")]
        assert values == [5, 7, 0, 18]

    def test_a_lower_value_is_a_reset(self) -> None:
        converter = Converter(state_epoch=EPOCH)
        converter.convert("t", counter_text(40, EPOCH + 1), scraped_at=EPOCH + 60)
        report = converter.convert("t", counter_text(3, EPOCH + 1), scraped_at=EPOCH + 120)
        assert [d.value for d in by_name(report.datums, "records")] == [3]
        assert report.resets == 1

    def test_a_new_created_time_is_a_reset_even_when_the_value_grew(self) -> None:
        """A restart that counted past the old value between scrapes is still a reset."""
        converter = Converter(state_epoch=EPOCH)
        converter.convert("t", counter_text(40, EPOCH + 1), scraped_at=EPOCH + 60)
        report = converter.convert("t", counter_text(55, EPOCH + 100), scraped_at=EPOCH + 120)
        assert [d.value for d in by_name(report.datums, "records")] == [55]
        assert report.resets == 1

    def test_process_start_stands_in_for_created(self) -> None:
        text_ = exposition(
            "# TYPE process_start_time_seconds gauge",
            f"process_start_time_seconds {EPOCH + 5}",
            "# TYPE records_total counter",
            'records_total{worker="a"} 9',
        )
        report = Converter(state_epoch=EPOCH).convert("t", text_, scraped_at=EPOCH + 60)
        assert [d.value for d in by_name(report.datums, "records")] == [9]

    def test_series_of_two_targets_are_apart(self) -> None:
        converter = Converter(state_epoch=EPOCH)
        converter.convert("pod-1", counter_text(10, EPOCH + 1), scraped_at=EPOCH + 60)
        report = converter.convert("pod-2", counter_text(4, EPOCH + 1), scraped_at=EPOCH + 60)
        assert [d.value for d in by_name(report.datums, "records")] == [4]
        assert report.resets == 0

    def test_state_round_trip_keeps_increases_exact(self) -> None:
        """A restart with the exported state neither re-sends nor loses an increase."""
        first = Converter(state_epoch=EPOCH)
        first.convert("t", counter_text(10, EPOCH + 1), scraped_at=EPOCH + 60)
        second = Converter(state_epoch=EPOCH + 500)
        second.import_state(first.export_state())
        report = second.convert("t", counter_text(16, EPOCH + 1), scraped_at=EPOCH + 600)
        assert [d.value for d in by_name(report.datums, "records")] == [6]

    def test_from_a_real_registry(self) -> None:
        """prometheus-client's own output: _total counter with its _created sample."""
        registry = CollectorRegistry()
        records = Counter("indutech_records_in", "x", ["worker", "stream"], registry=registry)
        records.labels("iot-ingest", "sensor").inc(7)
        report = Converter(state_epoch=0).convert("t", text(registry), scraped_at=2e9)
        [datum] = by_name(report.datums, "indutech_records_in")
        assert datum.value == 7
        assert datum.dimensions == (("stream", "sensor"), ("worker", "iot-ingest"))
        assert by_name(report.datums, "indutech_records_in_created") == []


class TestGauges:
    def test_gauges_as_they_are_and_not_finite_dropped(self) -> None:
        registry = CollectorRegistry()
        lag = Gauge("indutech_lag_seconds", "x", ["worker"], registry=registry)
        lag.labels("a").set(12.5)
        lag.labels("b").set(math.nan)
        lag.labels("c").set(math.inf)
        report = Converter(state_epoch=0).convert("t", text(registry), scraped_at=1.0)
        assert [(d.value, d.unit) for d in report.datums] == [(12.5, "Seconds")]
        assert report.dropped["not_finite"] == 2


class TestHistograms:
    """Histograms become Values/Counts of the buckets' increases (or statistic sets)."""

    def registry_with(self, observations: list[float]) -> tuple[CollectorRegistry, Histogram]:
        registry = CollectorRegistry()
        histogram = Histogram(
            "indutech_batch_duration_seconds",
            "x",
            ["worker"],
            buckets=(0.1, 1, 10),
            registry=registry,
        )
        for value in observations:
            histogram.labels("a").observe(value)
        return registry, histogram

    def test_values_and_counts_per_bucket(self) -> None:
        registry, _ = self.registry_with([0.05, 0.5, 0.7, 5, 50])
        report = Converter(state_epoch=0).convert("t", text(registry), scraped_at=2e9)
        [datum] = by_name(report.datums, "indutech_batch_duration_seconds")
        # 50 is above the last finite bound: counted there
        assert list(zip(datum.values, datum.counts, strict=True)) == [
            (0.1, 1),
            (1.0, 2),
            (10.0, 2),
        ]
        assert datum.unit == "Seconds"
        assert datum.dimensions == (("worker", "a"),)

    def test_increases_between_scrapes(self) -> None:
        registry, histogram = self.registry_with([0.5])
        converter = Converter(state_epoch=0)
        converter.convert("t", text(registry), scraped_at=2e9)
        histogram.labels("a").observe(0.05)
        histogram.labels("a").observe(0.06)
        report = converter.convert("t", text(registry), scraped_at=2e9 + 60)
        [datum] = by_name(report.datums, "indutech_batch_duration_seconds")
        assert list(zip(datum.values, datum.counts, strict=True)) == [(0.1, 2)]

    def test_no_observation_no_datum(self) -> None:
        registry, _ = self.registry_with([0.5])
        converter = Converter(state_epoch=0)
        converter.convert("t", text(registry), scraped_at=2e9)
        report = converter.convert("t", text(registry), scraped_at=2e9 + 60)
        assert by_name(report.datums, "indutech_batch_duration_seconds") == []

    def test_statistic_values_mode(self) -> None:
        registry, _ = self.registry_with([0.5, 0.7, 5])
        report = Converter(state_epoch=0, histogram_mode="statistics").convert(
            "t", text(registry), scraped_at=2e9
        )
        [datum] = by_name(report.datums, "indutech_batch_duration_seconds")
        assert datum.statistics is not None
        assert datum.statistics.sample_count == 3
        assert math.isclose(datum.statistics.total, 6.2)
        assert (datum.statistics.minimum, datum.statistics.maximum) == (0.1, 10.0)

    def test_more_than_150_buckets_split_into_several_datums(self) -> None:
        bounds = [float(i) for i in range(1, 321)]
        lines = ["# TYPE wide histogram"]
        for i, bound in enumerate(bounds, start=1):
            lines.append(f'wide_bucket{{le="{bound}"}} {i}')
        lines += [
            f'wide_bucket{{le="+Inf"}} {len(bounds)}',
            f"wide_count {len(bounds)}",
            "wide_sum 1000",
            "# TYPE wide_created gauge",
            "wide_created 5",
        ]
        report = Converter(state_epoch=0).convert("t", exposition(*lines), scraped_at=10)
        datums = by_name(report.datums, "wide")
        assert [len(d.values) for d in datums] == [MAX_VALUES_PER_DATUM, MAX_VALUES_PER_DATUM, 20]
        assert sum(sum(d.counts) for d in datums) == len(bounds)
        assert all(len(d.values) == len(d.counts) for d in datums)

    def test_reset_ships_the_new_life(self) -> None:
        registry, _ = self.registry_with([0.5, 0.5, 0.5])
        converter = Converter(state_epoch=0)
        converter.convert("t", text(registry), scraped_at=2e9)
        restarted, _ = self.registry_with([5])
        report = converter.convert("t", text(restarted), scraped_at=2e9 + 60)
        [datum] = by_name(report.datums, "indutech_batch_duration_seconds")
        assert list(zip(datum.values, datum.counts, strict=True)) == [(10.0, 1)]
        assert report.resets == 1


class TestSummaries:
    def test_quantiles_as_gauges_and_count_as_increase(self) -> None:
        text_ = exposition(
            "# TYPE rpc summary",
            'rpc{quantile="0.5"} 0.2',
            'rpc{quantile="0.99"} 1.5',
            "rpc_count 10",
            "rpc_sum 4",
            "# TYPE rpc_created gauge",
            "rpc_created 5",
        )
        report = Converter(state_epoch=0).convert("t", text_, scraped_at=10)
        values = {d.name: d.value for d in report.datums}
        assert values == {"rpc_p50": 0.2, "rpc_p99": 1.5, "rpc_count": 10, "rpc_sum": 4}

    def test_prometheus_client_summary_parses(self) -> None:
        registry = CollectorRegistry()
        Summary("handle_seconds", "x", registry=registry).observe(0.3)
        report = Converter(state_epoch=0).convert("t", text(registry), scraped_at=2e9)
        assert {d.name for d in report.datums} == {"handle_seconds_count", "handle_seconds_sum"}


class TestDimensions:
    """Labels become dimensions through allow/deny lists and a cardinality cap."""

    def test_deny_and_allow_lists(self) -> None:
        text_ = exposition("# TYPE g gauge", 'g{worker="a",pod="p-1",stream="s",table="t"} 1')
        denied = Converter(state_epoch=0).convert("t", text_, scraped_at=1)
        assert denied.datums[0].dimensions == (("stream", "s"), ("table", "t"), ("worker", "a"))
        allowed = Converter(
            state_epoch=0, rules=DimensionRules(allow=frozenset({"worker"}))
        ).convert("t", text_, scraped_at=1)
        assert allowed.datums[0].dimensions == (("worker", "a"),)

    def test_cardinality_cap_counts_the_extra_series_and_never_sends_them(self) -> None:
        lines = ["# TYPE g gauge"] + [f'g{{user="u{i}"}} {i}' for i in range(10)]
        converter = Converter(state_epoch=0, rules=DimensionRules(max_series_per_metric=3))
        report = converter.convert("t", exposition(*lines), scraped_at=1)
        assert [d.dimensions for d in report.datums] == [
            (("user", "u0"),),
            (("user", "u1"),),
            (("user", "u2"),),
        ]
        assert report.dropped["cardinality_cap"] == 7
        # the admitted series stay admitted on the next scrape; the others stay out
        again = converter.convert("t", exposition(*reversed(lines[1:]), lines[0]), scraped_at=2)
        assert {d.dimensions for d in again.datums} == {(("user", f"u{i}"),) for i in range(3)}

    def test_more_than_30_dimensions_is_dropped_and_counted(self) -> None:
        labels = ",".join(f'l{i}="v"' for i in range(31))
        report = Converter(state_epoch=0).convert(
            "t", exposition("# TYPE g gauge", f"g{{{labels}}} 1"), scraped_at=1
        )
        assert report.datums == []
        assert report.dropped["too_many_dimensions"] == 1

    def test_series_cloudwatch_would_refuse_are_dropped_counted_and_logged_once(self) -> None:
        long_name = "g" * 256
        text_ = exposition(
            "# TYPE ok gauge",
            'ok{worker="a"} 1',
            f'ok{{worker="{"v" * 1025}"}} 2',
            f"# TYPE {long_name} gauge",
            f'{long_name}{{worker="a"}} 3',
            f'{long_name}{{worker="b"}} 4',
        )
        converter = Converter(state_epoch=0)
        with capture_logs() as logs:
            report = converter.convert("t", text_, scraped_at=1)
            again = converter.convert("t", text_, scraped_at=2)
        assert [(d.name, d.value) for d in report.datums] == [("ok", 1)]
        assert report.dropped["invalid"] == again.dropped["invalid"] == 3
        logged = [e["metric"] for e in logs if e["event"] == "series_invalid"]
        assert logged == ["ok", "g" * 255]  # once a name, truncated to the limit

    def test_series_at_the_limits_are_kept(self) -> None:
        name = "g" * 255
        text_ = exposition(f"# TYPE {name} gauge", f'{name}{{worker="{"v" * 1024}"}} 1')
        report = Converter(state_epoch=0).convert("t", text_, scraped_at=1)
        assert len(report.datums) == 1
        assert not report.dropped
