"""``python -m indutech_iot_aggregator``: the same as the ``iot-aggregator`` command."""

import sys

from indutech_iot_aggregator.cli import main

sys.exit(main())
