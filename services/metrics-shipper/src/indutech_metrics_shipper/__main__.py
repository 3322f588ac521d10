"""``python -m indutech_metrics_shipper``: the same as the ``metrics-shipper`` command."""

import sys

from indutech_metrics_shipper.cli import main

sys.exit(main())
