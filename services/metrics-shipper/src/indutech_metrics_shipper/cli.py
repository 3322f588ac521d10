"""``metrics-shipper``: run the shipper (``--help`` lists every setting and its env variable)."""

from __future__ import annotations

import sys
from argparse import ArgumentParser, Namespace

from indutech_common.cli import worker_main
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_metrics_shipper.worker import MetricsShipperWorker


def _arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "command",
        nargs="?",
        choices=["run", "once"],
        default="run",
        help="run: scrape and ship every interval until SIGTERM (the default); "
        "once: one cycle, then exit (what is not delivered is lost unless state_file is set "
        "and the buffer drains)",
    )


def main(argv: list[str] | None = None) -> int:
    def run(settings: MetricsShipperSettings, args: Namespace) -> int:
        return MetricsShipperWorker(settings, once=args.command == "once").run()

    return worker_main(
        prog="metrics-shipper",
        description=(
            "Flow 7: every worker's /metrics to CloudWatch (counters as increases with resets "
            "detected, histograms as values/counts), batched within PutMetricData's limits and "
            "buffered through outages. Not built yet: logs, alarms, the status view."
        ),
        settings_cls=MetricsShipperSettings,
        run=run,
        argv=argv,
        add_arguments=_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
