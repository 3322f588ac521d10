"""``python -m indutech_iot_to_s3``: the same as the ``iot-to-s3`` command."""

import sys

from indutech_iot_to_s3.cli import main

sys.exit(main())
