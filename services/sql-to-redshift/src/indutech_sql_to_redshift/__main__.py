"""``python -m indutech_sql_to_redshift``: the same as the ``sql-to-redshift`` command."""

import sys

from indutech_sql_to_redshift.cli import main

sys.exit(main())
