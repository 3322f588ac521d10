"""``python -m indutech_iot_ingest``: the same as the ``iot-ingest`` command."""

import sys

from indutech_iot_ingest.cli import main

sys.exit(main())
