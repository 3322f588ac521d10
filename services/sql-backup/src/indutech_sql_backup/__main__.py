"""``python -m indutech_sql_backup``: the same as the ``sql-backup`` command."""

import sys

from indutech_sql_backup.cli import main

sys.exit(main())
