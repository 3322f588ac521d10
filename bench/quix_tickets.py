"""The peer of the iot-aggregator benchmark: Quix Streams computing the same event-time
tumbling-window aggregates of client tickets (count, exact revenue sum, latency
sum/count/min/max, hence the average) per customer (the record key; a customer's region is
fixed, so the groups are the same as ours), emitting each window once when it is final.

Run as ``python bench/quix_tickets.py TOPIC GROUP STATE_DIR WINDOWS WINDOW_S GRACE_S`` with
the stack's ``INDUTECH_KAFKA__*`` environment, in an environment holding quixstreams
(bench/iot_aggregator.py makes one with uv: it is not in the workspace's lock). It stops
after ``WINDOWS`` final windows and prints one JSON line: the process CPU seconds (every
thread, librdkafka's included) and the wall seconds from before ``app.run()`` to the last
window emitted. Nothing is written out (Quix has no warehouse sink here): this is its
ceiling."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

from quixstreams import Application  # type: ignore[import-not-found]
from quixstreams.kafka.configuration import (  # type: ignore[import-not-found]
    ConnectionConfig,
)
from quixstreams.models import TimestampType  # type: ignore[import-not-found]


def _event_time_ms(
    value: Any, _headers: Any, _timestamp: float, _timestamp_type: TimestampType
) -> int:
    return int(datetime.fromisoformat(value["event_time"]).timestamp() * 1000)


def _initial(value: dict[str, Any]) -> dict[str, int]:
    latency = int(value["latency_ms"])
    return {
        "count": 1,
        # Exact: cents as an integer (the revenue has two decimals), as NUMERIC(38,2) is ours.
        "revenue_cents": int(Decimal(value["revenue"]) * 100),
        "latency_sum": latency,
        "latency_count": 1,
        "latency_min": latency,
        "latency_max": latency,
    }


def _add(state: dict[str, int], value: dict[str, Any]) -> dict[str, int]:
    latency = int(value["latency_ms"])
    state["count"] += 1
    state["revenue_cents"] += int(Decimal(value["revenue"]) * 100)
    state["latency_sum"] += latency
    state["latency_count"] += 1
    state["latency_min"] = min(state["latency_min"], latency)
    state["latency_max"] = max(state["latency_max"], latency)
    return state


def main(argv: list[str]) -> int:
    topic_name, group, state_dir, windows, window_s, grace_s = argv
    expected = int(windows)
    connection = ConnectionConfig(
        bootstrap_servers=os.environ["INDUTECH_KAFKA__BOOTSTRAP_SERVERS"],
        security_protocol="sasl_ssl",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=os.environ["INDUTECH_KAFKA__USERNAME"],
        sasl_password=os.environ["INDUTECH_KAFKA__PASSWORD"],
        ssl_ca_location=os.environ["INDUTECH_KAFKA__TLS__CA_FILE"],
    )
    app = Application(
        broker_address=connection,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=False,  # no changelog: the cheapest state Quix offers
        auto_create_topics=False,
    )
    topic = app.topic(topic_name, value_deserializer="json", timestamp_extractor=_event_time_ms)
    emitted = 0
    finished: list[float] = []

    def _on_final(_window: dict[str, Any]) -> None:
        nonlocal emitted
        emitted += 1
        if emitted % 5000 == 0:
            print(f"emitted {emitted}", file=sys.stderr, flush=True)
        if emitted == expected:
            finished.extend((time.perf_counter(), time.process_time()))
            app.stop()

    (
        app.dataframe(topic)
        .tumbling_window(duration_ms=int(window_s) * 1000, grace_ms=int(float(grace_s) * 1000))
        .reduce(reducer=_add, initializer=_initial)
        .final(closing_strategy="partition")  # per-partition close, as ours
        .update(_on_final)
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        app.run()
    finally:
        print(f"emitted {emitted} of {expected}", file=sys.stderr, flush=True)
    if not finished:
        print(json.dumps({"error": f"stopped after {emitted} of {expected} windows"}))
        return 1
    print(
        json.dumps({"wall_s": finished[0] - started, "cpu_s": finished[1] - cpu_started}),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
