"""``python -m indutech_common.topics {create,check,list}``: the topics of the contract.

``create`` makes the missing topics with the contract's partitions, cleanup policy,
retention and the environment's replication, then checks every one; ``check`` only
checks; ``list`` prints the contract (no Kafka needed). The local stack, compose
and the Kubernetes Job run ``create``; every worker runs the same check at start.

Exit codes: 0 every topic matches; 1 a topic is missing or mis-configured (each is
named with the fix), or Kafka could not be reached; 2 bad settings or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import ClassVar, get_args

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from indutech_common.cli import EXIT_CONFIG, settings_help
from indutech_common.errors import ConfigError, IndutechError
from indutech_common.kafka.topics import (
    TopicReport,
    check_topics,
    contract_bindings,
    create_topics,
    fix_hint,
)
from indutech_common.logging import configure_logging
from indutech_common.schemas.topics import CONTRACT, ENVIRONMENTS, Environment, TopicSpec
from indutech_common.settings import KafkaSettings, WorkerSettings, load_settings

EXIT_OK = 0
EXIT_TOPICS = 1


class TopicsSettings(WorkerSettings):
    """Where the topics live: the workers' Kafka block (``INDUTECH_KAFKA__*``)."""

    service_name: ClassVar[str] = "topics"
    model_config = SettingsConfigDict(env_prefix="INDUTECH_TOPICS_")

    kafka: KafkaSettings
    environment: Environment = Field(
        default="production",
        description="replication profile: production (3 replicas, min ISR 2) or local (1, 1)",
    )


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _partitions(text: str) -> tuple[str, int]:
    name, value = _pair(text)
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the partition count must be a number >= 1")
    return name, int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m indutech_common.topics",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=settings_help(TopicsSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in (
        ("create", "create the missing topics, then check them all"),
        ("check", "check the topics exist with the contract's settings"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--only",
            action="append",
            default=[],
            metavar="TOPIC",
            help="a contract topic to handle (repeat; default: all)",
        )
        command.add_argument(
            "--name",
            action="append",
            default=[],
            type=_pair,
            metavar="TOPIC=ACTUAL",
            help="the actual name of a contract topic (tests, demo runs, prefixed clusters)",
        )
        command.add_argument(
            "--environment",
            choices=get_args(Environment),
            default=None,
            help="replication profile (default: INDUTECH_TOPICS_ENVIRONMENT, else production)",
        )
        if name == "create":
            command.add_argument(
                "--partitions-override",
                action="append",
                default=[],
                type=_partitions,
                metavar="TOPIC=N",
                help="partitions for a new topic, at least the contract's (e.g. "
                "sql.backup-work.v1=48 before a large initial load)",
            )
    listing = commands.add_parser("list", help="print the contract (no Kafka needed)")
    listing.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    return parser


def contract_markdown(specs: Sequence[TopicSpec] = CONTRACT) -> str:
    """The contract as the Markdown table docs/architecture.md shows."""
    lines = [
        "| topic | partitions (at least) | cleanup | retention | key | producers → consumers |",
        "|---|---|---|---|---|---|",
    ]
    for spec in specs:
        lines.append(
            f"| `{spec.name}` | {spec.partitions} | {spec.cleanup_policy} | "
            f"{_retention(spec.retention_ms)} | {spec.key} | "
            f"{', '.join(spec.producers)} → {', '.join(spec.consumers)} |"
        )
    return "\n".join(lines)


def _retention(retention_ms: int | None) -> str:
    if retention_ms is None:
        return "— (compacted)"
    if retention_ms == -1:
        return "forever"
    return f"{retention_ms / 86_400_000:g} d"


def _list(fmt: str) -> int:
    if fmt == "markdown":
        print(contract_markdown())
    elif fmt == "json":
        print(
            json.dumps(
                {
                    "topics": [spec.model_dump() for spec in CONTRACT],
                    "environments": {k: v.model_dump() for k, v in ENVIRONMENTS.items()},
                },
                indent=2,
            )
        )
    else:
        for spec in CONTRACT:
            print(
                f"{spec.name:28} partitions>={spec.partitions:<3} {spec.cleanup_policy:8} "
                f"retention {_retention(spec.retention_ms):14} "
                f"{', '.join(spec.producers)} -> {', '.join(spec.consumers)}"
            )
        for env, durability in ENVIRONMENTS.items():
            print(
                f"environment {env}: replication factor {durability.replication_factor}, "
                f"min.insync.replicas {durability.min_insync_replicas}"
            )
    return EXIT_OK


def _print_reports(reports: Sequence[TopicReport]) -> int:
    for report in reports:
        mark = "ok  " if report.ok else "FAIL"
        print(f"{mark} {report.describe()}")
    bad = [r for r in reports if not r.ok]
    if bad:
        print(
            f"{len(bad)} topic(s) missing or mis-configured.\n{fix_hint(bad)}",
            file=sys.stderr,
        )
        return EXIT_TOPICS
    return EXIT_OK


async def _run(settings: TopicsSettings, args: argparse.Namespace) -> int:
    environment: Environment = args.environment or settings.environment
    names = dict(args.name)
    bindings = contract_bindings(args.only, names)
    if args.command == "check":
        reports = await check_topics(settings.kafka, bindings, environment=environment)
        return _print_reports(reports)
    overrides = dict(args.partitions_override)
    contract_bindings(only=overrides)  # an unknown topic name is refused
    partitions = {}
    for binding in bindings:
        if binding.spec.name in overrides:
            count = overrides[binding.spec.name]
            if count < binding.spec.partitions:
                raise ConfigError(
                    f"--partitions-override {binding.spec.name}={count} is below the contract's "
                    f"{binding.spec.partitions}: the check would refuse the topic it creates"
                )
            partitions[binding.name] = count
    reports = await create_topics(
        settings.kafka, bindings, environment=environment, partitions=partitions
    )
    return _print_reports(reports)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        return _list(args.format)
    try:
        settings = load_settings(TopicsSettings)
    except ConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # stdout is the report; logs (JSON by default, as every worker's) go to stderr
    configure_logging(
        level=settings.logging.level,
        fmt=settings.logging.format,
        service="topics",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(_run(settings, args))
    except KeyError as exc:  # an unknown contract name in --only/--name/--partitions-override
        print(f"{parser.prog}: {exc.args[0]}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except IndutechError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_TOPICS


if __name__ == "__main__":
    sys.exit(main())
