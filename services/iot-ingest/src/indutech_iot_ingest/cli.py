"""``iot-ingest [run]`` runs the worker; ``iot-ingest generate`` writes realistic SAN files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from indutech_common.cli import worker_main
from indutech_iot_ingest.config import IotIngestSettings
from indutech_iot_ingest.generator import GenerateOptions, describe, generate, parse_start
from indutech_iot_ingest.worker import IotIngestWorker

DESCRIPTION = (
    "Flow 1: tail the SAN (JSON Lines, CSV, gzip), validate each line, and send records and file "
    "checkpoints to Kafka in one transaction (exactly-once). Subcommands: run (default), generate."
)


def generate_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="iot-ingest generate",
        description="Write realistic sensor readings and client tickets as SAN files "
        "(deterministic under --seed).",
    )
    parser.add_argument("--dir", type=Path, required=True, help="the SAN directory to write")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="records/s (0: as fast as possible)"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds to run")
    parser.add_argument("--count", type=int, default=None, help="records to write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--formats", default="jsonl,csv", help="comma-separated: jsonl, csv (default both)"
    )
    parser.add_argument("--rotate-every", type=int, default=0, help="records per file (0: never)")
    parser.add_argument("--gzip", action="store_true", help="gzip rotated files")
    parser.add_argument("--bom", action="store_true", help="start CSV files with a UTF-8 BOM")
    parser.add_argument("--ticket-ratio", type=float, default=0.2)
    parser.add_argument(
        "--event-id-ratio", type=float, default=1.0, help="share of records carrying an event_id"
    )
    parser.add_argument("--start", default=None, help="first event time (ISO 8601 or 'now')")
    args = parser.parse_args(argv)
    formats = tuple(part.strip() for part in args.formats.split(",") if part.strip())
    if not formats or any(fmt not in ("jsonl", "csv") for fmt in formats):
        parser.error(f"--formats must list jsonl and/or csv, not {args.formats!r}")
    if args.count is None and args.duration is None:
        parser.error("give --count or --duration")
    options = GenerateOptions(
        directory=args.dir,
        rate=args.rate,
        count=args.count,
        duration_s=args.duration,
        seed=args.seed,
        formats=formats,
        rotate_every=args.rotate_every,
        gzip_rotated=args.gzip,
        bom=args.bom,
        ticket_ratio=args.ticket_ratio,
        event_id_ratio=args.event_id_ratio,
        start=parse_start(args.start),
    )
    written = generate(options)
    print(describe(options, written))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] == "generate":
        return generate_main(arguments[1:])

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "command",
            nargs="?",
            default="run",
            choices=["run", "generate"],
            help="run the worker (default), or generate SAN files (see 'generate --help')",
        )

    def run(settings: IotIngestSettings, _args: argparse.Namespace) -> int:
        return IotIngestWorker(settings).run()

    return worker_main(
        prog="iot-ingest",
        description=DESCRIPTION,
        settings_cls=IotIngestSettings,
        run=run,
        argv=arguments,
        add_arguments=add_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
