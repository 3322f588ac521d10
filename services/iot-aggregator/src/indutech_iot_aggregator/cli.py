"""``iot-aggregator``: run the worker, or ``migrate`` the warehouse schema; ``--help``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from indutech_common.cli import worker_main
from indutech_common.logging import configure_logging
from indutech_iot_aggregator.config import IotAggregatorSettings
from indutech_iot_aggregator.sinks import WarehouseSink
from indutech_iot_aggregator.worker import IotAggregatorWorker

EXIT_OK = 0


async def migrate(settings: IotAggregatorSettings) -> int:
    """Create the schema, tables and views (what the worker does at start unless
    IOT_AGGREGATOR_CREATE_SCHEMA=false); safe to run again."""
    sink = await WarehouseSink.open(settings.warehouse, schema=settings.warehouse_schema)
    try:
        await sink.migrate()
    finally:
        await sink.close()
    return EXIT_OK


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "migrate"),
        default="run",
        help="run: consume and aggregate (default); migrate: create the warehouse schema, "
        "tables and views, then exit",
    )


def main(argv: list[str] | None = None) -> int:
    def run(settings: IotAggregatorSettings, args: argparse.Namespace) -> int:
        if args.command == "migrate":
            configure_logging(
                level=settings.logging.level,
                fmt=settings.logging.format,
                service=IotAggregatorWorker.name,
            )
            return asyncio.run(migrate(settings))
        return IotAggregatorWorker(settings).run()

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
