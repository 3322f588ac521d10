"""A scrape target for the metrics-shipper benchmark: a generated Prometheus exposition.

``python -m bench.prom_target PORT`` serves ``/metrics`` with ``SERIES`` (10,000) series that
become one CloudWatch datum each per cycle: 4,000 counters and 4,000 gauges in 20 families
each, 2,000 histograms (11 buckets, ``_sum``, ``_count``) in 10 families; 200 label sets a
family (the shipper's default cardinality cap). Every scrape moves each counter on and adds
two observations to each histogram, so after the first scrape (a baseline for counters and
histograms) every series yields a datum. The text is generated per request, as a worker's
client library would, in this separate process (pinned away from the shipper's core).
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAMILIES_PER_KIND = 20
HISTOGRAM_FAMILIES = 10
SERIES_PER_FAMILY = 200
SERIES = (2 * FAMILIES_PER_KIND + HISTOGRAM_FAMILIES) * SERIES_PER_FAMILY
BOUNDS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10")
WORKERS = ("iot-ingest", "iot-to-s3", "iot-aggregator", "sql-backup", "identity-sync")


def _labels(i: int) -> str:
    return (
        f'worker="{WORKERS[i % len(WORKERS)]}",topic="iot.topic-{i % 40:02d}",'
        f'partition="{i}",instance="10.0.0.{i % 7}:8080"'
    )


def exposition(scrape: int) -> str:
    """The text of scrape number ``scrape`` (0, 1, …): counters and histograms only grow."""
    lines: list[str] = []
    for f in range(FAMILIES_PER_KIND):
        name = f"bench_records_{f:02d}"
        lines += [f"# HELP {name}_total Records handled.", f"# TYPE {name}_total counter"]
        lines += [
            f"{name}_total{{{_labels(i)}}} {1000 + scrape * (i + f + 1)}.0"
            for i in range(SERIES_PER_FAMILY)
        ]
    for f in range(FAMILIES_PER_KIND):
        name = f"bench_queue_depth_{f:02d}"
        lines += [f"# HELP {name} Items waiting.", f"# TYPE {name} gauge"]
        lines += [
            f"{name}{{{_labels(i)}}} {(scrape * 7 + i + f) % 97}.0"
            for i in range(SERIES_PER_FAMILY)
        ]
    for f in range(HISTOGRAM_FAMILIES):
        name = f"bench_batch_{f:02d}_seconds"
        lines += [f"# HELP {name} Batch duration.", f"# TYPE {name} histogram"]
        for i in range(SERIES_PER_FAMILY):
            labels = _labels(i)
            # two observations a scrape: one in bucket (i % 5), one in bucket (i % 5) + 5
            low, high = i % 5, i % 5 + 5
            below = 0
            for b, bound in enumerate(BOUNDS):
                below += scrape * ((b == low) + (b == high))
                lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {below}.0')
            lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {below}.0')
            lines.append(f"{name}_sum{{{labels}}} {scrape * (0.01 + 1.0):.3f}")
            lines.append(f"{name}_count{{{labels}}} {below}.0")
    return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    scrapes = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        with _Handler.lock:
            scrape = _Handler.scrapes
            _Handler.scrapes += 1
        body = exposition(scrape).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per scrape is noise here."""


def main(argv: list[str]) -> int:
    server = ThreadingHTTPServer(("127.0.0.1", int(argv[0])), _Handler)
    print("ready", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
