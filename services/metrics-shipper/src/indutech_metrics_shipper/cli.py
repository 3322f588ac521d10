"""``metrics-shipper``: run the shipper (``--help`` lists every setting and its env variable)."""

from __future__ import annotations

import asyncio
import sys
from argparse import ArgumentParser, Namespace

from indutech_common.cli import EXIT_CONFIG, worker_main
from indutech_common.cloudwatch import create_cloudwatch_client
from indutech_metrics_shipper import alarms, dashboard
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_metrics_shipper.sources import ScrapeSource
from indutech_metrics_shipper.status import State, StatusBoard, render_text
from indutech_metrics_shipper.worker import MetricsShipperWorker


def _arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "command",
        nargs="?",
        choices=["run", "once", "alarms", "dashboard", "status"],
        default="run",
        help="run: scrape and ship every interval until SIGTERM (the default); "
        "once: one cycle, then exit (what is not delivered is lost, or kept for the next run "
        "with buffer_dir); alarms (or alarms apply): create or update the seed's "
        "alarms (with --dry-run: only show what would change); dashboard: write the seven "
        "flows' dashboard; "
        "status: scrape the targets twice and print the seven flows against the seed's "
        "thresholds (exit 1 when one is red)",
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=["apply"],
        help="alarms apply: the same as alarms (the issue's spelling: alarms apply --dry-run)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="alarms: print the changes, write nothing"
    )
    parser.add_argument(
        "--window",
        type=float,
        default=5.0,
        help="status: seconds between the two scrapes that give throughput and new errors",
    )


def main(argv: list[str] | None = None) -> int:
    def run(settings: MetricsShipperSettings, args: Namespace) -> int:
        if args.action is not None and args.command != "alarms":
            print(
                f"metrics-shipper: '{args.action}' belongs to 'alarms' only: run "
                "'metrics-shipper alarms apply [--dry-run]' or 'metrics-shipper "
                f"{args.command}' alone.",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        if args.command == "alarms":
            return asyncio.run(apply_alarms(settings, dry_run=args.dry_run))
        if args.command == "dashboard":
            return asyncio.run(write_dashboard(settings))
        if args.command == "status":
            return asyncio.run(print_status(settings, window_s=args.window))
        if not settings.has_something_to_ship():
            print(
                "metrics-shipper: invalid configuration for metrics-shipper: nothing to ship.\n"
                "  Set METRICS_SHIPPER_TARGETS (the workers' /metrics), METRICS_SHIPPER_LOG_DIR, "
                "METRICS_SHIPPER_KAFKA__* (broker lag) or METRICS_SHIPPER_WAREHOUSE__* "
                "(warehouse queue), or INDUTECH_* for the shared blocks, and start again.",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        return MetricsShipperWorker(settings, once=args.command == "once").run()

    return worker_main(
        prog="metrics-shipper",
        description=(
            "Flow 7: every worker's /metrics, broker lag and the warehouse queue to CloudWatch "
            "(counters as increases with resets detected, histograms as values/counts), by "
            "PutMetricData or as EMF log events, buffered through outages (in memory or on "
            "disk); the workers' log files to CloudWatch Logs, each line once; the seed's alarms "
            "(alarms apply), the seven flows' dashboard (dashboard) and status view (status, and "
            "/status on the health port)."
        ),
        settings_cls=MetricsShipperSettings,
        run=run,
        argv=argv,
        add_arguments=_arguments,
    )


async def apply_alarms(settings: MetricsShipperSettings, *, dry_run: bool) -> int:
    """Print one line per alarm: create, update (fields), unchanged, or unmanaged."""
    async with create_cloudwatch_client(settings.cloudwatch) as client:
        changes = await alarms.apply(
            client,
            prefix=settings.alarm_prefix,
            namespace=settings.namespace,
            actions=settings.alarm_actions,
            dry_run=dry_run,
        )
    for change in changes:
        print(change.describe())
    if dry_run:
        print("dry run: nothing written")
    return 0


async def write_dashboard(settings: MetricsShipperSettings) -> int:
    async with create_cloudwatch_client(settings.cloudwatch) as client:
        problems = await dashboard.apply_dashboard(
            client,
            name=settings.dashboard_name,
            namespace=settings.namespace,
            region=settings.cloudwatch.region,
        )
    for problem in problems:
        print(f"CloudWatch says: {problem}", file=sys.stderr)
    print(f"dashboard {settings.dashboard_name} written ({len(dashboard.FLOWS)} flows)")
    return 1 if problems else 0


async def print_status(settings: MetricsShipperSettings, *, window_s: float) -> int:
    """Two scrapes ``window_s`` apart, then one line per flow; exit 1 when one is red."""
    source = ScrapeSource(
        settings.targets, timeout_s=settings.scrape_timeout_s, ca_file=settings.scrape_ca_file
    )
    board = StatusBoard()
    try:
        board.update(await source.read())
        await asyncio.sleep(window_s)
        board.update(await source.read())
    finally:
        await source.close()
    statuses = board.statuses()
    print(render_text(statuses))
    return 1 if any(s.state is State.RED for s in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
