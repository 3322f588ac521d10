"""``python -m indutech_identity_sync``: the same as the ``identity-sync`` command."""

import sys

from indutech_identity_sync.cli import main

sys.exit(main())
