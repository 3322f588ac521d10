"""``iot-aggregator``: run the worker, ``migrate`` the schema, ``rebuild`` a range; ``--help``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime

from indutech_common.cli import EXIT_CONFIG, worker_main
from indutech_common.logging import configure_logging
from indutech_iot_aggregator.access import opened_sink
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_aggregator.errors import BadRangeError, RebuildError
from indutech_iot_aggregator.rebuild import rebuild
from indutech_iot_aggregator.worker import IotAggregatorWorker

EXIT_OK = 0
EXIT_FAILED = 1


async def migrate(settings: IotAggregatorSettings) -> int:
    """Create the schema, tables and views (what the worker does at start unless
    IOT_AGGREGATOR_CREATE_SCHEMA=false); safe to run again."""
    async with opened_sink(settings) as sink:
        await sink.migrate()
    return EXIT_OK


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-03-01T10:00:00+00:00)"
        ) from None


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number of seconds")
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "migrate", "rebuild"),
        default="run",
        help="run: consume and aggregate (default); migrate: create the warehouse schema, "
        "tables and views, then exit; rebuild: recompute --from/--to from the lake",
    )
    parser.add_argument(
        "--from", dest="start", type=_moment, help="rebuild: first window start (inclusive)"
    )
    parser.add_argument("--to", dest="end", type=_moment, help="rebuild: end (exclusive)")
    parser.add_argument(
        "--chunk-s",
        dest="chunk_s",
        type=_seconds,
        help="rebuild: event time per chunk and transaction (default "
        "IOT_AGGREGATOR_REBUILD_CHUNK_S, an hour); a chunk's lake records are what is held "
        "in memory",
    )


async def _rebuild(
    settings: IotAggregatorSettings, start: datetime, end: datetime, chunk_s: int | None
) -> int:
    try:
        report = await rebuild(settings, start, end, chunk_s=chunk_s)
    except RebuildError as exc:
        # chunks committed before a failure stay rebuilt: running the command again finishes
        print(f"iot-aggregator rebuild: {exc}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, BadRangeError) else EXIT_FAILED
    print(
        f"rebuilt {report.windows} windows ({report.rows} rows) from {report.records} lake "
        f"records in {report.chunks} chunks; {report.left_to_stream} newer records left to "
        "the stream"
    )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    def run(settings: IotAggregatorSettings, args: argparse.Namespace) -> int:
        if args.command == "run":
            return IotAggregatorWorker(settings).run()
        configure_logging(
            level=settings.logging.level,
            fmt=settings.logging.format,
            service=IotAggregatorWorker.name,
        )
        if args.command == "migrate":
            return asyncio.run(migrate(settings))
        if args.start is None or args.end is None:
            print("iot-aggregator rebuild: give --from and --to", file=sys.stderr)
            return EXIT_CONFIG
        return asyncio.run(_rebuild(settings, args.start, args.end, args.chunk_s))

    return worker_main(
        prog="iot-aggregator",
        description=(
            "Flow 3: the iot.* topics (read_committed consumer group) into event-time "
            "tumbling-window aggregates in the warehouse (schema rt): tickets by customer and "
            "region, readings by sensor, site and metric. Partial aggregates per source "
            "partition and the consumed offsets are written in one warehouse transaction: "
            "exactly-once in effect."
        ),
        settings_cls=IotAggregatorSettings,
        run=run,
        argv=argv,
        add_arguments=_add_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
