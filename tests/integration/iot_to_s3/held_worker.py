"""iot-to-s3 as a subprocess that stops at one point of its delivery protocol.

``python -m tests.integration.iot_to_s3.held_worker --hold-at committed`` runs the
real worker (settings from the environment, as ``iot-to-s3`` reads them) and, the
first time a segment reaches that step, logs ``held_at_step`` and waits forever:
the kill tests SIGKILL it there, so the kill lands exactly between two steps.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import structlog
from aiokafka import TopicPartition

from indutech_common.cli import worker_main
from indutech_iot_to_s3.config import IotToS3Settings
from indutech_iot_to_s3.worker import STEPS, IotToS3Worker, Step


def main(argv: list[str] | None = None) -> int:
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--hold-at", choices=STEPS, required=True)

    def run(settings: IotToS3Settings, args: argparse.Namespace) -> int:
        forever = asyncio.Event()

        async def hold(step: Step, tp: TopicPartition) -> None:
            if step == args.hold_at:
                structlog.get_logger("held_worker").warning(
                    "held_at_step", step=step, partition=str(tp)
                )
                await forever.wait()

        return IotToS3Worker(settings, on_step=hold).run()

    return worker_main(
        prog="held-worker",
        description="iot-to-s3, stopped at one step for a kill test",
        settings_cls=IotToS3Settings,
        run=run,
        argv=argv,
        add_arguments=add_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
