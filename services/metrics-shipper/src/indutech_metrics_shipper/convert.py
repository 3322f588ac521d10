"""Prometheus text exposition → CloudWatch metric data, without the usual losses.

The faults of the tools this replaces, and what is done here instead:

- counters shipped as running totals (prometheus-to-cloudwatch): a counter
  becomes the *increase* since the previous scrape of the same series;
- the first value lost (ADOT's awsemf): a series that began while the shipper's
  state was tracking (its ``_created`` or its process start is not older than
  the state) ships its whole value at first sight; only a series older than the
  state is taken as a baseline (its past may have been shipped by an earlier
  shipper whose state was lost: re-sending it would double it);
- counter resets missed (ADOT): a value below the previous one, or a new
  ``_created`` / process start time, is a reset, and the increase is the new value;
- histograms dropped (the CloudWatch agent, Vector): the buckets' increases
  become CloudWatch ``Values``/``Counts`` (at most 150 pairs a datum, split
  beyond), or ``StatisticValues`` as a setting;
- NaN and ±Inf, which PutMetricData refuses, are dropped and counted;
- unbounded label values: dimensions come from an allow/deny list of labels and
  each metric name admits a capped number of dimension sets; the extra series
  are counted, never sent.

The text is parsed by prometheus-client's own parser.
"""

from __future__ import annotations

import math
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from prometheus_client.metrics_core import Metric

from indutech_metrics_shipper.exposition import Exposition

_log = structlog.get_logger(__name__)

# PutMetricData's own limits (CloudWatch quotas page).
MAX_DIMENSIONS = 30
MAX_VALUES_PER_DATUM = 150
MAX_NAME_CHARS = 255  # MetricName, and a dimension's Name
MAX_DIMENSION_VALUE_CHARS = 1024

HistogramMode = Literal["values", "statistics"]
Dimensions = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class StatisticSet:
    sample_count: float
    total: float
    minimum: float
    maximum: float


@dataclass(frozen=True, slots=True)
class Datum:
    """One CloudWatch MetricDatum: a value, a values/counts pair, or a statistic set."""

    name: str
    dimensions: Dimensions
    timestamp: float
    unit: str = "None"
    value: float | None = None
    values: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()
    statistics: StatisticSet | None = None

    def to_api(self) -> dict[str, Any]:
        """The MetricDatum as PutMetricData takes it."""
        datum: dict[str, Any] = {
            "MetricName": self.name,
            "Timestamp": datetime.fromtimestamp(self.timestamp, UTC),
            "Unit": self.unit,
        }
        if self.dimensions:
            datum["Dimensions"] = [{"Name": k, "Value": v} for k, v in self.dimensions]
        if self.statistics is not None:
            s = self.statistics
            datum["StatisticValues"] = {
                "SampleCount": s.sample_count,
                "Sum": s.total,
                "Minimum": s.minimum,
                "Maximum": s.maximum,
            }
        elif self.values:
            datum["Values"] = list(self.values)
            datum["Counts"] = list(self.counts)
        else:
            datum["Value"] = self.value
        return datum


@dataclass(frozen=True)
class DimensionRules:
    """Which labels become dimensions, and how many dimension sets a metric may have."""

    allow: frozenset[str] = frozenset()  # empty: every label not denied
    deny: frozenset[str] = frozenset({"instance", "pod", "le", "quantile"})
    max_series_per_metric: int = 200

    def dimensions(self, labels: dict[str, str]) -> Dimensions:
        kept = (
            (k, v)
            for k, v in labels.items()
            if k not in self.deny and (not self.allow or k in self.allow) and v != ""
        )
        return tuple(sorted(kept))


@dataclass
class ConversionReport:
    """What one scrape gave and what was left out, for the shipper's own metrics."""

    datums: list[Datum] = field(default_factory=list)
    dropped: Tally[str] = field(default_factory=Tally)  # reason → series
    baselined: int = 0
    resets: int = 0


SeriesId = tuple[str, str, Dimensions]  # (target, sample or family name, all labels sorted)


@dataclass(frozen=True)
class _ScrapeContext:
    target: str
    scraped_at: float
    created: dict[tuple[str, Dimensions], float]
    process_start: float | None
    report: ConversionReport

    def started(self, family: str, labels: Dimensions) -> float | None:
        """When the series began: its ``_created`` sample, else its process's start."""
        return self.created.get((family, labels), self.process_start)


@dataclass
class _CounterMemory:
    value: float
    started: float | None


@dataclass
class _HistogramMemory:
    buckets: tuple[float, ...]  # cumulative counts, in bound order
    count: float
    total: float
    started: float | None


class Converter:
    """Turns scrapes into datums, remembering each counter's last value.

    ``state_epoch`` is when the memory began (the first start of the shipper,
    kept with the state when the state is persisted).
    """

    def __init__(
        self,
        *,
        state_epoch: float,
        rules: DimensionRules | None = None,
        histogram_mode: HistogramMode = "values",
    ) -> None:
        self.state_epoch = state_epoch
        self.rules = rules or DimensionRules()
        self.histogram_mode = histogram_mode
        self._counters: dict[SeriesId, _CounterMemory] = {}
        self._histograms: dict[SeriesId, _HistogramMemory] = {}
        self._admitted: dict[str, set[Dimensions]] = {}
        self._refused: set[str] = set()  # metric names refused as invalid, logged once each

    # -- state, so that a restart with its state neither loses nor doubles -------------

    def export_state(self) -> dict[str, Any]:
        return {
            "epoch": self.state_epoch,
            "counters": [[*_key(s), m.value, m.started] for s, m in self._counters.items()],
            "histograms": [
                [*_key(s), list(m.buckets), m.count, m.total, m.started]
                for s, m in self._histograms.items()
            ],
        }

    def import_state(self, state: dict[str, Any]) -> None:
        self.state_epoch = float(state["epoch"])
        for target, name, labels, value, started in state.get("counters", []):
            self._counters[(target, name, _labels(labels))] = _CounterMemory(value, started)
        for target, name, labels, buckets, count, total, started in state.get("histograms", []):
            self._histograms[(target, name, _labels(labels))] = _HistogramMemory(
                tuple(buckets), count, total, started
            )

    # -- conversion ---------------------------------------------------------------------

    def convert(self, target: str, text: str | Exposition, scraped_at: float) -> ConversionReport:
        """Datums for one scrape of ``target`` (an address or a DNS name's pod).

        ``text``: the exposition, or its families as parsed once for the cycle
        (``exposition.parse_scrapes``, shared with the status board).
        """
        report = ConversionReport()
        exposition = text if isinstance(text, Exposition) else Exposition.parse(text)
        families = exposition.families
        ctx = _ScrapeContext(
            target, scraped_at, _created_times(families), _process_start(families), report
        )
        for family in families:
            if family.name.endswith("_created") and family.type == "gauge":
                continue  # paired with its counter or histogram above
            if family.type == "counter":
                self._counter(family, ctx)
            elif family.type == "histogram":
                self._histogram(family, ctx)
            elif family.type == "summary":
                self._summary(family, ctx)
            else:  # gauge, unknown, info, stateset: the value as it is
                for sample in family.samples:
                    self._emit_value(family, sample.name, sample.labels, sample.value, ctx)
        return report

    def _counter(self, family: Metric, ctx: _ScrapeContext) -> None:
        for sample in family.samples:
            if not sample.name.endswith("_total") and sample.name != family.name:
                continue
            labels = _labels(sample.labels)
            increase = self._counter_increase(
                (ctx.target, sample.name, labels),
                sample.value,
                ctx.started(family.name, labels),
                ctx.report,
            )
            if increase is not None:
                self._emit_value(family, family.name, sample.labels, increase, ctx)

    def _counter_increase(
        self, series: SeriesId, value: float, started: float | None, report: ConversionReport
    ) -> float | None:
        if not math.isfinite(value):
            report.dropped["not_finite"] += 1
            return None
        previous = self._counters.get(series)
        self._counters[series] = _CounterMemory(value, started)
        if previous is None:
            if started is not None and started >= self.state_epoch:
                return value  # it began while we were watching: all of it is new
            report.baselined += 1
            return None
        if value < previous.value or (
            started is not None and previous.started is not None and started != previous.started
        ):
            report.resets += 1
            return value
        return value - previous.value

    def _histogram(self, family: Metric, ctx: _ScrapeContext) -> None:
        grouped: dict[Dimensions, dict[str, Any]] = {}
        for sample in family.samples:
            plain = {k: v for k, v in sample.labels.items() if k != "le"}
            entry = grouped.setdefault(_labels(plain), {"buckets": [], "labels": plain})
            if sample.name.endswith("_bucket"):
                entry["buckets"].append((_bound(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                entry["count"] = sample.value
            elif sample.name.endswith("_sum"):
                entry["sum"] = sample.value
        for labels_id, entry in grouped.items():
            buckets = sorted(entry["buckets"])
            cumulative = tuple(count for _, count in buckets)
            count = float(entry.get("count", cumulative[-1] if cumulative else 0.0))
            total = float(entry.get("sum", 0.0))
            if not all(math.isfinite(v) for v in (*cumulative, count, total)):
                ctx.report.dropped["not_finite"] += 1
                continue
            started = ctx.started(family.name, labels_id)
            series = (ctx.target, family.name, labels_id)
            increase = self._histogram_increase(
                series, _HistogramMemory(cumulative, count, total, started), ctx.report
            )
            if increase is None or increase.count <= 0:
                continue
            bounds = [bound for bound, _ in buckets]
            dimensions = self.rules.dimensions(entry["labels"])
            for datum in self._histogram_datums(family.name, dimensions, bounds, increase, ctx):
                self._admit(datum, ctx.report)

    def _histogram_increase(
        self, series: SeriesId, now: _HistogramMemory, report: ConversionReport
    ) -> _HistogramMemory | None:
        previous = self._histograms.get(series)
        self._histograms[series] = now
        if previous is None:
            if now.started is not None and now.started >= self.state_epoch:
                return now
            report.baselined += 1
            return None
        reset = (
            now.count < previous.count
            or len(now.buckets) != len(previous.buckets)
            or any(a < b for a, b in zip(now.buckets, previous.buckets, strict=True))
            or (
                now.started is not None
                and previous.started is not None
                and now.started != previous.started
            )
        )
        if reset:
            report.resets += 1
            return now
        return _HistogramMemory(
            tuple(a - b for a, b in zip(now.buckets, previous.buckets, strict=True)),
            now.count - previous.count,
            now.total - previous.total,
            now.started,
        )

    def _histogram_datums(
        self,
        name: str,
        dimensions: Dimensions,
        bounds: list[float],
        increase: _HistogramMemory,
        ctx: _ScrapeContext,
    ) -> Iterator[Datum]:
        unit = _unit(name)
        scraped_at = ctx.scraped_at
        # per-bucket counts from the cumulative ones; an observation is counted at its
        # bucket's upper bound (the +Inf bucket at the highest finite bound)
        finite = [b for b in bounds if math.isfinite(b)]
        top = finite[-1] if finite else 0.0
        counts_at: dict[float, float] = {}  # insertion order = bound order
        below = 0.0
        lowest: float | None = None
        highest = 0.0
        for index, (bound, cumulative) in enumerate(zip(bounds, increase.buckets, strict=True)):
            in_bucket = cumulative - below
            below = cumulative
            if in_bucket <= 0:
                continue
            value = bound if math.isfinite(bound) else top
            counts_at[value] = counts_at.get(value, 0.0) + in_bucket
            if lowest is None:
                lowest = bounds[index - 1] if index > 0 else 0.0
            highest = value
        pairs = list(counts_at.items())
        if self.histogram_mode == "statistics":
            yield Datum(
                name,
                dimensions,
                scraped_at,
                unit,
                statistics=StatisticSet(
                    increase.count, increase.total, lowest or 0.0, max(highest, lowest or 0.0)
                ),
            )
            return
        for start in range(0, len(pairs), MAX_VALUES_PER_DATUM):
            chunk = pairs[start : start + MAX_VALUES_PER_DATUM]
            yield Datum(
                name,
                dimensions,
                scraped_at,
                unit,
                values=tuple(v for v, _ in chunk),
                counts=tuple(c for _, c in chunk),
            )

    def _summary(self, family: Metric, ctx: _ScrapeContext) -> None:
        for sample in family.samples:
            if sample.name == family.name:  # a quantile: a gauge with the quantile as dimension
                labels = dict(sample.labels)
                quantile = labels.pop("quantile", "")
                name = f"{family.name}_p{_percent(quantile)}"
                self._emit_value(family, name, labels, sample.value, ctx)
                continue
            labels_id = _labels(sample.labels)
            increase = self._counter_increase(
                (ctx.target, sample.name, labels_id),
                sample.value,
                ctx.started(family.name, labels_id),
                ctx.report,
            )
            if increase is not None:
                self._emit_value(family, sample.name, sample.labels, increase, ctx)

    def _emit_value(
        self, family: Metric, name: str, labels: dict[str, str], value: float, ctx: _ScrapeContext
    ) -> None:
        if not math.isfinite(value):
            ctx.report.dropped["not_finite"] += 1
            return
        unit = "Count" if family.type == "counter" else _unit(name)
        datum = Datum(name, self.rules.dimensions(labels), ctx.scraped_at, unit, value=value)
        self._admit(datum, ctx.report)

    def _admit(self, datum: Datum, report: ConversionReport) -> None:
        if len(datum.dimensions) > MAX_DIMENSIONS:
            report.dropped["too_many_dimensions"] += 1
            return
        if not _within_limits(datum):  # CloudWatch refuses it: never buffer it
            report.dropped["invalid"] += 1
            if datum.name not in self._refused:
                self._refused.add(datum.name)
                _log.warning("series_invalid", metric=datum.name[:MAX_NAME_CHARS])
            return
        admitted = self._admitted.setdefault(datum.name, set())
        if datum.dimensions not in admitted:
            if len(admitted) >= self.rules.max_series_per_metric:
                report.dropped["cardinality_cap"] += 1
                return
            admitted.add(datum.dimensions)
        report.datums.append(datum)


def _within_limits(datum: Datum) -> bool:
    """PutMetricData's length limits (an empty label is no dimension: see DimensionRules)."""
    return len(datum.name) <= MAX_NAME_CHARS and all(
        len(name) <= MAX_NAME_CHARS and len(value) <= MAX_DIMENSION_VALUE_CHARS
        for name, value in datum.dimensions
    )


def _labels(labels: dict[str, str] | Iterable[Iterable[str]]) -> Dimensions:
    items = labels.items() if isinstance(labels, dict) else (tuple(pair) for pair in labels)
    return tuple(sorted((str(k), str(v)) for k, v in items))


def _key(series: SeriesId) -> list[Any]:
    target, name, labels = series
    return [target, name, [list(pair) for pair in labels]]


def _bound(le: str) -> float:
    return math.inf if le in {"+Inf", "Inf"} else float(le)


def _percent(quantile: str) -> str:
    try:
        return f"{float(quantile) * 100:g}".replace(".", "_")
    except ValueError:
        return quantile or "unknown"


def _unit(name: str) -> str:
    for suffix, unit in (("_seconds", "Seconds"), ("_bytes", "Bytes"), ("_ratio", "None")):
        if name.endswith(suffix) or name.endswith(f"{suffix}_total"):
            return unit
    return "None"


def _created_times(families: Iterable[Metric]) -> dict[tuple[str, Dimensions], float]:
    """``X_created`` gauges (how the text format carries a series' start) by (X, labels)."""
    created: dict[tuple[str, Dimensions], float] = {}
    for family in families:
        if family.type == "gauge" and family.name.endswith("_created"):
            base = family.name.removesuffix("_created")
            for sample in family.samples:
                labels = {k: v for k, v in sample.labels.items() if k != "le"}
                created[(base, _labels(labels))] = sample.value
    return created


def _process_start(families: Iterable[Metric]) -> float | None:
    for family in families:
        if family.name == "process_start_time_seconds":
            for sample in family.samples:
                return float(sample.value)
    return None
