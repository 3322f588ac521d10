"""``iot-to-s3``: run the worker (``--help`` lists every setting and its env variable)."""

from __future__ import annotations

import sys
from argparse import Namespace

from indutech_common.cli import worker_main
from indutech_iot_to_s3.config import IotToS3Settings
from indutech_iot_to_s3.worker import IotToS3Worker


def main(argv: list[str] | None = None) -> int:
    def run(settings: IotToS3Settings, _args: Namespace) -> int:
        return IotToS3Worker(settings).run()

    return worker_main(
        prog="iot-to-s3",
        description=(
            "Flow 2: the iot.* topics (read_committed consumer group) into the S3 lake as "
            "zstd Parquet, hive-partitioned by event hour; every record exactly once."
        ),
        settings_cls=IotToS3Settings,
        run=run,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
