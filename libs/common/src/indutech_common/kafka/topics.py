"""Create and check topics against the contract (``indutech_common.schemas.topics``).

Workers, tests and the demo name their topics in settings, so every function here
takes :class:`TopicBinding` s: an actual topic name and the contract entry it must
satisfy. ``require_topics`` is what a worker calls at start; ``create_topics`` and
``check_topics`` are what ``python -m indutech_common.topics`` runs.

Nothing here asks the broker about a topic by name before knowing it exists: a
metadata request for one missing topic is how brokers with auto-creation make
it, with one partition and default settings, which is the mistake to catch.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from indutech_common.errors import ConfigError
from indutech_common.kafka.clients import translate_connection_error
from indutech_common.kafka.config import connection_kwargs
from indutech_common.kafka.exceptions import KafkaClientError
from indutech_common.schemas.topics import (
    CONTRACT,
    ENVIRONMENTS,
    Durability,
    Environment,
    TopicSpec,
    contract_spec,
)
from indutech_common.settings import KafkaSettings

_log = structlog.get_logger(__name__)

CHECKED_CONFIGS = ("cleanup.policy", "retention.ms", "min.insync.replicas")
TOPIC_ALREADY_EXISTS = 36
COMMAND = "python -m indutech_common.topics"


class TopicContractError(ConfigError):
    """A topic a worker needs is missing or does not have the contract's settings."""


@dataclass(frozen=True)
class TopicBinding:
    """An actual topic name and the contract entry it must satisfy."""

    name: str
    spec: TopicSpec

    @classmethod
    def of(cls, name: str, contract_name: str) -> TopicBinding:
        return cls(name, contract_spec(contract_name))

    @property
    def renamed(self) -> bool:
        return self.name != self.spec.name


def contract_bindings(
    only: Iterable[str] = (), names: Mapping[str, str] | None = None
) -> list[TopicBinding]:
    """The contract's topics (``only`` some of them), renamed by ``names`` (contract → actual)."""
    names = names or {}
    selected = set(only)
    unknown = (selected | set(names)) - {spec.name for spec in CONTRACT}
    if unknown:
        contract_spec(sorted(unknown)[0])  # raises KeyError naming the known topics
    return [
        TopicBinding(names.get(spec.name, spec.name), spec)
        for spec in CONTRACT
        if not selected or spec.name in selected
    ]


@dataclass
class TopicReport:
    """What the broker has for one binding, and what is wrong with it."""

    binding: TopicBinding
    exists: bool = False
    partitions: int = 0
    replication_factor: int = 0
    configs: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    retention_too_short: bool = False

    @property
    def ok(self) -> bool:
        return self.exists and not self.problems

    def describe(self) -> str:
        binding = self.binding
        label = binding.name
        if binding.renamed:
            label += f" (contract {binding.spec.name})"
        if not self.exists:
            return f"{label}: missing"
        return f"{label}: " + "; ".join(self.problems or ["ok", *self.notes])


def judge(report: TopicReport, durability: Durability | None) -> None:
    """Fill ``problems`` and ``notes`` of an existing topic."""
    spec = report.binding.spec
    if report.partitions < spec.partitions:
        report.problems.append(
            f"{report.partitions} partition(s), the contract needs at least {spec.partitions}"
        )
    elif report.partitions > spec.partitions:
        report.notes.append(f"{report.partitions} partitions (contract: {spec.partitions})")
    policy = report.configs.get("cleanup.policy", "")
    if sorted(p.strip() for p in policy.split(",")) != [spec.cleanup_policy]:
        report.problems.append(f"cleanup.policy={policy}, the contract needs {spec.cleanup_policy}")
    retention = _int(report.configs.get("retention.ms"))
    wanted = spec.retention_ms
    if wanted is not None and retention is not None and _forever(wanted) > _forever(retention):
        report.problems.append(f"retention.ms={retention}, the contract needs at least {wanted}")
        report.retention_too_short = True
    min_isr = _int(report.configs.get("min.insync.replicas"))
    if min_isr is not None and min_isr > report.replication_factor:
        report.problems.append(
            f"min.insync.replicas={min_isr} exceeds the replication factor "
            f"{report.replication_factor}: every acks=all write would fail"
        )
    if durability is None:
        return
    if report.replication_factor < durability.replication_factor:
        report.problems.append(
            f"replication factor {report.replication_factor}, the environment needs "
            f"{durability.replication_factor}"
        )
    if min_isr is not None and min_isr < durability.min_insync_replicas:
        report.problems.append(
            f"min.insync.replicas={min_isr}, the environment needs {durability.min_insync_replicas}"
        )


def _forever(retention_ms: int) -> float:
    """-1 means "keep forever": the longest retention of all."""
    return float("inf") if retention_ms < 0 else retention_ms


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


@asynccontextmanager
async def admin_client(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client over the same connection settings (SASL_SSL, SCRAM) as the workers."""
    admin = AIOKafkaAdminClient(**connection_kwargs(kafka))
    try:
        await asyncio.wait_for(admin.start(), timeout=kafka.request_timeout_ms / 1000)
    except (TimeoutError, kafka_errors.KafkaError, OSError) as exc:
        await admin.close()
        raise translate_connection_error(exc, kafka) from None
    try:
        yield admin
    finally:
        await admin.close()


async def inspect_topics(
    admin: AIOKafkaAdminClient,
    bindings: Sequence[TopicBinding],
    *,
    environment: Environment | None = None,
) -> list[TopicReport]:
    """Compare each binding with what the broker has (without ever auto-creating one)."""
    reports = [TopicReport(binding) for binding in bindings]
    # All topics' metadata: asking for one missing topic by name would auto-create it.
    metadata = {t["topic"]: t for t in await admin.describe_topics() if t["error_code"] == 0}
    existing = [r for r in reports if r.binding.name in metadata]
    for report in existing:
        partitions = metadata[report.binding.name]["partitions"]
        report.exists = True
        report.partitions = len(partitions)
        report.replication_factor = min((len(p["replicas"]) for p in partitions), default=0)
    if existing:
        configs = await _describe_configs(admin, {r.binding.name for r in existing})
        for report in existing:
            report.configs = configs.get(report.binding.name, {})
    durability = ENVIRONMENTS[environment] if environment else None
    for report in existing:
        judge(report, durability)
    return reports


async def _describe_configs(
    admin: AIOKafkaAdminClient, names: Iterable[str]
) -> dict[str, dict[str, str]]:
    wanted = dict.fromkeys(CHECKED_CONFIGS)
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, configs=wanted) for name in names]
    )
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"]:
                raise KafkaClientError(
                    f"describing the configs of topic {resource['resource_name']!r} failed: "
                    f"{resource['error_message'] or resource['error_code']}. Does the Kafka "
                    "user have DESCRIBE_CONFIGS on it?"
                )
            found[resource["resource_name"]] = {
                entry["config_names"]: entry["config_value"] or ""
                for entry in resource["config_entries"]
            }
    return found


async def create_topics(
    kafka: KafkaSettings,
    bindings: Sequence[TopicBinding],
    *,
    environment: Environment,
    partitions: Mapping[str, int] | None = None,
) -> list[TopicReport]:
    """Create the missing topics with the contract's settings, then check all of them.

    Of an existing topic, only a retention shorter than the contract's is repaired
    (a longer retention deletes nothing). Anything else is reported for a person to
    decide: adding partitions re-routes keys (the compacted checkpoints would split),
    changing the cleanup policy deletes or compacts data. ``partitions`` overrides
    the count of a new topic, by actual name.
    """
    durability = ENVIRONMENTS[environment]
    partitions = partitions or {}
    async with admin_client(kafka) as admin:
        before = await inspect_topics(admin, bindings, environment=environment)
        missing = [r.binding for r in before if not r.exists]
        if missing:
            new_topics = [
                NewTopic(
                    b.name,
                    num_partitions=partitions.get(b.name, b.spec.partitions),
                    replication_factor=durability.replication_factor,
                    topic_configs=b.spec.configs(durability),
                )
                for b in missing
            ]
            response = await admin.create_topics(new_topics)
            _raise_create_errors(response, durability)
            for b in missing:
                _log.info("topic_created", topic=b.name, contract=b.spec.name)
            await _wait_visible(admin, {b.name for b in missing})
        short = [r for r in before if r.retention_too_short and len(r.problems) == 1]
        if short:
            await _raise_retention(admin, short)
        return await inspect_topics(admin, bindings, environment=environment)


async def _raise_retention(admin: AIOKafkaAdminClient, reports: Sequence[TopicReport]) -> None:
    """Set retention.ms to the contract's, keeping the topic's other overrides.

    aiokafka's alter_configs is the non-incremental AlterConfigs: the topic's
    overrides are replaced by exactly the set sent, so the set sent is all of them.
    """
    resources = []
    for report in reports:
        overrides = await _topic_overrides(admin, report.binding.name)
        overrides["retention.ms"] = str(report.binding.spec.retention_ms)
        resources.append(ConfigResource(ConfigResourceType.TOPIC, report.binding.name, overrides))
    for response in await admin.alter_configs(resources):
        for resource in response.to_object()["resources"]:
            name = resource["resource_name"]
            if resource["error_code"]:
                raise KafkaClientError(
                    f"raising retention.ms of topic {name!r} failed: "
                    f"{resource['error_message'] or resource['error_code']}. Does the Kafka "
                    "user have ALTER_CONFIGS on it?"
                )
            _log.info("topic_retention_raised", topic=name)


async def _topic_overrides(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    """The configs set on the topic itself (not the broker's defaults)."""
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    (resource,) = response.to_object()["resources"]
    overrides = {}
    for entry in resource["config_entries"]:
        # v0 has is_default; v1+ has config_source (1 = DYNAMIC_TOPIC_CONFIG)
        own = (
            entry.get("config_source") == 1 if "config_source" in entry else not entry["is_default"]
        )
        if own and not entry["is_sensitive"]:
            overrides[entry["config_names"]] = entry["config_value"]
    return overrides


def _raise_create_errors(response: Any, durability: Durability) -> None:
    failures = []
    for name, code, *rest in response.topic_errors:
        if code in (0, TOPIC_ALREADY_EXISTS):  # already there: a concurrent create won
            continue
        message = rest[0] if rest and rest[0] else kafka_errors.for_code(code).__name__
        failures.append(f"{name}: {message}")
    if failures:
        hint = ""
        if any("replication factor" in f.lower() for f in failures):
            hint = (
                f" The environment asks for replication factor {durability.replication_factor}:"
                " on a one-broker cluster use --environment local."
            )
        raise KafkaClientError("creating topics failed: " + "; ".join(failures) + "." + hint)


async def _wait_visible(
    admin: AIOKafkaAdminClient, names: set[str], *, timeout_s: float = 30.0
) -> None:
    """A created topic answers metadata requests a moment later; wait for all of them."""
    async with asyncio.timeout(timeout_s):
        while True:
            metadata = await admin.describe_topics()
            ready = {
                t["topic"]
                for t in metadata
                if t["error_code"] == 0
                and t["partitions"]
                and all(p["leader"] >= 0 for p in t["partitions"])
            }
            if names <= ready:
                return
            await asyncio.sleep(0.1)


async def check_topics(
    kafka: KafkaSettings,
    bindings: Sequence[TopicBinding],
    *,
    environment: Environment | None = None,
) -> list[TopicReport]:
    async with admin_client(kafka) as admin:
        return await inspect_topics(admin, bindings, environment=environment)


def fix_hint(reports: Sequence[TopicReport]) -> str:
    """What to run (missing topics) or change (mis-configured ones)."""
    lines = []
    missing = [r.binding for r in reports if not r.exists]
    if missing:
        args = [*COMMAND.split(), "create"]
        for b in missing:
            args += ["--only", b.spec.name]
            if b.renamed:
                args += ["--name", f"{b.spec.name}={b.name}"]
        lines.append(
            "Create the missing topic(s) with the contract's settings (same KAFKA__* "
            f"settings; --environment local on a one-broker cluster): {shlex.join(args)}"
        )
    if any(r.exists and r.problems for r in reports):
        lines.append(
            "A mis-configured topic is never changed automatically: alter it "
            "(kafka-configs --alter / rpk topic alter-config for configs, kafka-topics "
            "--alter / rpk topic add-partitions for partitions) or delete and recreate it "
            f"with {COMMAND} create (replication: --environment local on a one-broker "
            f"cluster). `{COMMAND} list` shows the contract."
        )
    return "\n".join(lines)


async def require_topics(
    kafka: KafkaSettings, topics: Mapping[str, str], *, worker: str
) -> list[TopicReport]:
    """A worker's start-up check: ``topics`` maps each configured name to its contract name.

    Raises :class:`TopicContractError` (a configuration error: the worker exits 2)
    naming every missing or mis-configured topic and the fix.
    """
    bindings = [TopicBinding.of(name, contract) for name, contract in topics.items()]
    reports = await check_topics(kafka, bindings)
    bad = [r for r in reports if not r.ok]
    for report in reports:
        if report.notes:
            _log.warning(
                "topic_differs_from_contract", topic=report.binding.name, notes=report.notes
            )
    if bad:
        lines = "\n".join(f"  {r.describe()}" for r in bad)
        raise TopicContractError(
            f"{worker} cannot start: {len(bad)} topic(s) it needs are missing or "
            f"mis-configured:\n{lines}\n{fix_hint(bad)}"
        )
    _log.info("topics_checked", worker=worker, topics=[r.binding.name for r in reports])
    return reports
