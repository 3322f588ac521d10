"""One status view of the seven flows: each against its seed threshold, green/amber/red.

Built from what the shipper scraped (the workers' own ``/metrics``), so it
needs nothing from CloudWatch and works while CloudWatch is away. Per flow:
throughput (records out per second between the last two scrapes), lag, age
of the last success and errors since the previous scrape. Red: a threshold of
the seed's table is crossed, or the worker did not answer; amber: over half a
threshold, or no success for a while; green otherwise; grey: no target for
the flow (not deployed here).
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from indutech_metrics_shipper.exposition import Exposition, Scraped


class State(StrEnum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"
    GREY = "grey"


@dataclass(frozen=True)
class FlowRule:
    flow: int
    worker: str
    title: str
    lag_metric: str
    lag_threshold_s: float | None  # the seed's lag alarm (None: the seed sets none)
    errors_are_red: bool  # the seed's "any error" rows
    success_within_s: float  # older than this: amber (a stuck worker reports no lag)


RULES: tuple[FlowRule, ...] = (
    FlowRule(1, "iot-ingest", "SAN → Redpanda", "indutech_lag_seconds", 300, False, 900),
    FlowRule(2, "iot-to-s3", "Redpanda → S3 lake", "indutech_lag_seconds", 600, False, 1800),
    FlowRule(
        3,
        "iot-aggregator",
        "Redpanda → warehouse",
        "indutech_iot_aggregator_ingestion_lag_seconds",
        3600,
        False,
        1800,
    ),
    FlowRule(
        4, "sql-backup", "SQL Server → S3 backup", "indutech_lag_seconds", None, True, 26 * 3600
    ),
    FlowRule(
        5,
        "sql-to-redshift",
        "S3 backup → warehouse",
        "indutech_sql_to_redshift_lag_seconds",  # per table, the worst table counts
        1800,
        True,
        26 * 3600,
    ),
    FlowRule(6, "identity-sync", "AD ↔ AWS Managed AD", "indutech_lag_seconds", 60, True, 600),
    FlowRule(7, "metrics-shipper", "metrics → CloudWatch", "indutech_lag_seconds", None, True, 600),
)


@dataclass
class WorkerReading:
    """One worker's numbers from one scrape (summed over its pods)."""

    at: float
    records_out: float = 0.0
    errors: float = 0.0
    lag_s: float | None = None
    last_success: float | None = None


# What a worker reports that the board reads (the rule's lag metric besides).
RECORDS_OUT = "indutech_records_out_total"
ERRORS = "indutech_errors_total"
LAST_SUCCESS = "indutech_last_success_timestamp_seconds"


def read_worker(text: str | Exposition, rule: FlowRule, at: float) -> WorkerReading | None:
    """The rule's numbers from one exposition, or None when it is another worker's.

    Only the families the rule names are read (by name); whether the worker is
    there at all is whether any finite sample carries its ``worker`` label.
    """
    exposition = text if isinstance(text, Exposition) else Exposition.parse(text)
    if rule.worker not in exposition.label_values("worker"):
        return None
    reading = WorkerReading(at)

    def values(name: str) -> Iterable[float]:
        for sample in exposition.samples(name):
            if sample.labels.get("worker") == rule.worker and math.isfinite(sample.value):
                yield sample.value

    reading.records_out = sum(values(RECORDS_OUT), 0.0)
    reading.errors = sum(values(ERRORS), 0.0)
    lags = list(values(rule.lag_metric))
    if lags:
        reading.lag_s = max(0.0, *lags)
    successes = list(values(LAST_SUCCESS))
    if successes:
        reading.last_success = max(0.0, *successes)
    return reading


@dataclass
class FlowStatus:
    rule: FlowRule
    state: State
    reasons: list[str] = field(default_factory=list)
    throughput_per_s: float | None = None
    lag_s: float | None = None
    success_age_s: float | None = None
    new_errors: float | None = None


def judge(
    rule: FlowRule,
    now: WorkerReading | None,
    before: WorkerReading | None,
    *,
    has_target: bool,
    answered: bool,
    clock: float | None = None,
) -> FlowStatus:
    """One flow's state from its two latest readings."""
    if not has_target:
        return FlowStatus(rule, State.GREY, ["no scrape target for this worker"])
    if not answered or now is None:
        return FlowStatus(rule, State.RED, ["its /metrics did not answer"])
    status = FlowStatus(rule, State.GREEN, lag_s=now.lag_s)
    wall = clock if clock is not None else time.time()
    if now.last_success is not None:
        status.success_age_s = max(0.0, wall - now.last_success)
    if before is not None and now.at > before.at:
        status.throughput_per_s = max(0.0, now.records_out - before.records_out) / (
            now.at - before.at
        )
        status.new_errors = max(0.0, now.errors - before.errors)
    red: list[str] = []
    amber: list[str] = []
    if rule.lag_threshold_s is not None and now.lag_s is not None:
        if now.lag_s > rule.lag_threshold_s:
            red.append(f"lag {now.lag_s:.0f} s > {rule.lag_threshold_s:.0f} s")
        elif now.lag_s > rule.lag_threshold_s / 2:
            amber.append(f"lag {now.lag_s:.0f} s, over half of {rule.lag_threshold_s:.0f} s")
    if status.new_errors:
        (red if rule.errors_are_red else amber).append(f"{status.new_errors:.0f} new errors")
    if status.success_age_s is not None and status.success_age_s > rule.success_within_s:
        amber.append(f"no success for {status.success_age_s:.0f} s")
    status.reasons = red or amber
    status.state = State.RED if red else State.AMBER if amber else State.GREEN
    return status


def judge_all(
    readings: Mapping[str, tuple[WorkerReading | None, WorkerReading | None, bool, bool]],
    *,
    clock: float | None = None,
) -> list[FlowStatus]:
    """``readings[worker] = (now, before, has_target, answered)`` → the seven flows."""
    statuses = []
    for rule in RULES:
        now, before, has_target, answered = readings.get(rule.worker, (None, None, False, False))
        statuses.append(
            judge(rule, now, before, has_target=has_target, answered=answered, clock=clock)
        )
    return statuses


class StatusBoard:
    """The latest two readings of each worker, from the shipper's scrapes.

    A target is tied to the workers its exposition named, so a target that stops
    answering turns its workers red instead of silently dropping out of the view.
    """

    def __init__(self) -> None:
        self._now: dict[str, WorkerReading] = {}
        self._before: dict[str, WorkerReading] = {}
        self._workers_of: dict[str, set[str]] = {}  # target id -> workers it reported
        self._silent: set[str] = set()  # workers with a target that did not answer

    def update(
        self, scrapes: Iterable[Scraped], *, parsed: Mapping[str, Exposition] | None = None
    ) -> None:
        """The workers' readings from one cycle's scrapes.

        ``parsed``: each answered scrape's text as already parsed for the converter, by
        target id (``exposition.parse_scrapes``); a text missing from it is parsed here, once.
        """
        merged: dict[str, WorkerReading] = {}
        silent: set[str] = set()
        for scrape in scrapes:
            if scrape.text is None:
                silent |= self._workers_of.get(scrape.target.id, set())
                continue
            exposition = (parsed or {}).get(scrape.target.id) or Exposition.parse(scrape.text)
            found: set[str] = set()
            for rule in RULES:
                reading = read_worker(exposition, rule, scrape.scraped_at)
                if reading is None:
                    continue
                found.add(rule.worker)
                total = merged.get(rule.worker)
                merged[rule.worker] = reading if total is None else _merge(total, reading)
            self._workers_of[scrape.target.id] = found
        for worker, reading in merged.items():
            if worker in self._now:
                self._before[worker] = self._now[worker]
            self._now[worker] = reading
        self._silent = silent - set(merged)

    def statuses(self, *, clock: float | None = None) -> list[FlowStatus]:
        known = set(self._now) | {w for ws in self._workers_of.values() for w in ws}
        readings = {
            worker: (
                self._now.get(worker),
                self._before.get(worker),
                True,
                worker not in self._silent,
            )
            for worker in known
        }
        return judge_all(readings, clock=clock)


def _merge(a: WorkerReading, b: WorkerReading) -> WorkerReading:
    """Two pods of one worker: counts add up, the worst lag and the newest success count."""
    lags = [x for x in (a.lag_s, b.lag_s) if x is not None]
    successes = [x for x in (a.last_success, b.last_success) if x is not None]
    return WorkerReading(
        max(a.at, b.at),
        a.records_out + b.records_out,
        a.errors + b.errors,
        max(lags) if lags else None,
        max(successes) if successes else None,
    )


def _number(value: float | None, unit: str) -> str:
    return "—" if value is None else f"{value:,.1f} {unit}"


def render_text(statuses: Iterable[FlowStatus]) -> str:
    lines = [
        f"{'flow':<4} {'worker':<16} {'state':<6} {'records/s':>11} {'lag':>10} "
        f"{'last ok':>10} {'errors':>7}  why"
    ]
    for s in statuses:
        lines.append(
            f"{s.rule.flow:<4} {s.rule.worker:<16} {s.state.value:<6} "
            f"{_number(s.throughput_per_s, ''):>11} {_number(s.lag_s, 's'):>10} "
            f"{_number(s.success_age_s, 's'):>10} "
            f"{'—' if s.new_errors is None else f'{s.new_errors:.0f}':>7}  "
            f"{'; '.join(s.reasons)}"
        )
    return "\n".join(lines)


_COLOURS = {
    State.GREEN: "#1e8e3e",
    State.AMBER: "#f29900",
    State.RED: "#d93025",
    State.GREY: "#9aa0a6",
}


def render_html(statuses: Iterable[FlowStatus], *, refresh_s: int = 15) -> str:
    rows = []
    for s in statuses:
        colour = _COLOURS[s.state]
        rows.append(
            f'<tr data-flow="{s.rule.flow}" data-state="{s.state.value}">'
            f"<td>{s.rule.flow}</td><td>{html.escape(s.rule.worker)}</td>"
            f"<td>{html.escape(s.rule.title)}</td>"
            f'<td style="background:{colour};color:#fff;font-weight:bold">{s.state.value}</td>'
            f"<td>{_number(s.throughput_per_s, '/s')}</td><td>{_number(s.lag_s, 's')}</td>"
            f"<td>{_number(s.success_age_s, 's')}</td>"
            f"<td>{'—' if s.new_errors is None else f'{s.new_errors:.0f}'}</td>"
            f"<td>{html.escape('; '.join(s.reasons))}</td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{refresh_s}'>"
        "<title>InduTech Flows: status</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.4em .8em;text-align:left}</style></head><body>"
        "<h1>InduTech Flows: the seven flows</h1>"
        "<table><tr><th>flow</th><th>worker</th><th>what</th><th>state</th><th>records</th>"
        "<th>lag</th><th>last success</th><th>new errors</th><th>why</th></tr>"
        + "".join(rows)
        + "</table><p>Against the seed's thresholds; from the workers' own /metrics, "
        "as the shipper last scraped them.</p></body></html>"
    )
