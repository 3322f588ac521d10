"""``identity-sync``: run the worker, one cycle (``--once``), or print the plan (``--dry-run``)."""

from __future__ import annotations

import argparse
import sys

from indutech_common.cli import EXIT_CONFIG, worker_main
from indutech_common.errors import ConfigError
from indutech_identity_sync.config import IdentitySyncSettings
from indutech_identity_sync.worker import IdentitySyncWorker


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="run one full reconcile and exit")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the planned changes, write nothing (one cycle)",
    )
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="let this run pass the deletion threshold (after an operator checked the deletes)",
    )


def main(argv: list[str] | None = None) -> int:
    def run(settings: IdentitySyncSettings, args: argparse.Namespace) -> int:
        if args.dry_run:
            settings = settings.model_copy(update={"dry_run": True})
        try:
            worker = IdentitySyncWorker(
                settings, once=args.once, allow_mass_delete=args.allow_mass_delete
            )
        except ConfigError as exc:
            print(f"identity-sync: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return worker.run()

    return worker_main(
        prog="identity-sync",
        description="Flow 6: on-prem AD <-> AWS Managed Microsoft AD, bidirectional and loop-free.",
        settings_cls=IdentitySyncSettings,
        run=run,
        argv=argv,
        add_arguments=_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
