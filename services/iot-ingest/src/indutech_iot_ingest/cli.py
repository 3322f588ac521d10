"""``iot-ingest [run]``: run the worker (``--help`` lists every setting and its env variable).

Demo SAN files come from ``python -m indutech_devtools.iot`` (dev-only), not from here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from indutech_common.cli import worker_main
from indutech_iot_ingest.config import IotIngestSettings
from indutech_iot_ingest.worker import IotIngestWorker

DESCRIPTION = (
    "Flow 1: tail the SAN (JSON Lines, CSV, gzip), validate each line, and send records and file "
    "checkpoints to Kafka in one transaction (exactly-once)."
)


def main(argv: Sequence[str] | None = None) -> int:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "command", nargs="?", default="run", choices=["run"], help="run the worker (default)"
        )

    def run(settings: IotIngestSettings, _args: argparse.Namespace) -> int:
        return IotIngestWorker(settings).run()

    return worker_main(
        prog="iot-ingest",
        description=DESCRIPTION,
        settings_cls=IotIngestSettings,
        run=run,
        argv=argv,
        add_arguments=add_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
