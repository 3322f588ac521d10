"""The topic contract against the real broker: ``python -m indutech_common.topics`` creates
and checks topics, and every worker refuses to start without the topics it needs.

Names are unique per test (``--name CONTRACT=ACTUAL``), as the workers take theirs from
settings; the contract's own names belong to the shared stack and are not touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from structlog.testing import capture_logs

from indutech_common.cli import EXIT_CONFIG
from indutech_common.kafka import TopicBinding, connection_kwargs
from indutech_common.kafka.topics import check_topics, contract_bindings, create_topics
from indutech_common.schemas import CONTRACT, Topics
from indutech_identity_sync.config import IdentitySyncSettings
from indutech_identity_sync.state import MemoryStateStore
from indutech_identity_sync.worker import IdentitySyncWorker
from indutech_iot_ingest.worker import IotIngestWorker
from indutech_iot_to_s3.worker import IotToS3Worker
from indutech_sql_backup.scheduling import DeltaScheduler
from indutech_sql_backup.worker import SqlBackupWorker
from tests.integration.iot_ingest.conftest import IngestTopics, ingest_settings
from tests.integration.iot_to_s3.conftest import Lake
from tests.integration.iot_to_s3.conftest import settings_for as lake_settings
from tests.integration.sql_backup.conftest import Erp
from tests.integration.sql_backup.conftest import settings_for as backup_settings
from tests.support.kafka import temporary_topics
from tests.support.stack import REPO_ROOT, StackSettings


@pytest.fixture
async def admin(stack: StackSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
    await client.start()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def names(stack: StackSettings, unique: str) -> AsyncIterator[dict[str, str]]:
    """A unique actual name for every contract topic; whatever exists of them is deleted after."""
    mapping = {spec.name: f"test.{unique}.{spec.name}" for spec in CONTRACT}
    yield mapping
    admin = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.delete_topics([name for name in mapping.values() if name in existing])
    finally:
        await admin.close()


def topics_cli(stack: StackSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m indutech_common.topics`` with the stack's Kafka settings (as the workers')."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDUTECH_")}
    env |= {
        "INDUTECH_KAFKA__BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
        "INDUTECH_KAFKA__USERNAME": str(stack.kafka.username),
        "INDUTECH_KAFKA__PASSWORD": stack.kafka.password.get_secret_value()
        if stack.kafka.password
        else "",
        "INDUTECH_KAFKA__TLS__CA_FILE": str(stack.kafka.tls.ca_file),
        "INDUTECH_TOPICS_ENVIRONMENT": "local",
    }
    return subprocess.run(
        [sys.executable, "-m", "indutech_common.topics", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def renamed(names: dict[str, str], *contract: str) -> list[str]:
    args = []
    for name in contract or list(names):
        args += ["--only", name, "--name", f"{name}={names[name]}"]
    return args


async def topic_configs(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    (resource,) = response.to_object()["resources"]
    return {e["config_names"]: e["config_value"] for e in resource["config_entries"]}


async def partition_count(admin: AIOKafkaAdminClient, name: str) -> int:
    metadata = {t["topic"]: t for t in await admin.describe_topics()}
    return len(metadata[name]["partitions"])


class TestCreate:
    async def test_creates_every_contract_topic_with_its_settings(
        self, stack: StackSettings, admin: AIOKafkaAdminClient, names: dict[str, str]
    ) -> None:
        """``create`` makes each topic with the contract's partitions, policy and retention."""
        result = topics_cli(stack, "create", *renamed(names))
        assert result.returncode == 0, result.stderr
        for spec in CONTRACT:
            actual = names[spec.name]
            assert f"ok   {actual} (contract {spec.name}): ok" in result.stdout
            assert await partition_count(admin, actual) == spec.partitions
            configs = await topic_configs(admin, actual)
            assert configs["cleanup.policy"] == spec.cleanup_policy
            assert configs["min.insync.replicas"] == "1"
            if spec.retention_ms is not None:
                assert configs["retention.ms"] == str(spec.retention_ms)

        again = topics_cli(stack, "create", *renamed(names))
        assert again.returncode == 0, again.stderr
        assert "topic_created" not in again.stderr  # nothing left to create

    async def test_partitions_override_and_its_floor(
        self, stack: StackSettings, admin: AIOKafkaAdminClient, names: dict[str, str]
    ) -> None:
        """More partitions than the contract on request (a note, not a failure); fewer: refused."""
        work = Topics.BACKUP_WORK
        refused = topics_cli(
            stack, "create", *renamed(names, work), "--partitions-override", f"{work}=4"
        )
        assert refused.returncode == EXIT_CONFIG
        assert "below the contract's 12" in refused.stderr

        result = topics_cli(
            stack, "create", *renamed(names, work), "--partitions-override", f"{work}=16"
        )
        assert result.returncode == 0, result.stderr
        assert await partition_count(admin, names[work]) == 16
        assert "16 partitions (contract: 12)" in result.stdout

    async def test_raises_a_short_retention_and_keeps_other_overrides(
        self, stack: StackSettings, admin: AIOKafkaAdminClient, names: dict[str, str]
    ) -> None:
        """A retention shorter than the contract's is raised (it deletes nothing); the topic's
        other settings stay as they were."""
        dlq = names[Topics.DEAD_LETTER]
        await admin.create_topics(
            [
                NewTopic(
                    dlq,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={"retention.ms": "60000", "max.message.bytes": "2000000"},
                )
            ]
        )
        (before,) = await check_topics(stack.kafka, [TopicBinding.of(dlq, Topics.DEAD_LETTER)])
        assert before.problems == ["retention.ms=60000, the contract needs at least 2592000000"]

        result = topics_cli(stack, "create", *renamed(names, Topics.DEAD_LETTER))
        assert result.returncode == 0, result.stderr
        configs = await topic_configs(admin, dlq)
        assert configs["retention.ms"] == "2592000000"
        assert configs["max.message.bytes"] == "2000000"


class TestCheck:
    async def test_missing_topic_is_named_with_the_fix_and_not_auto_created(
        self, stack: StackSettings, admin: AIOKafkaAdminClient, names: dict[str, str]
    ) -> None:
        """``check`` exits 1 naming the missing topic and the command that creates it, and the
        check itself does not make the broker auto-create it."""
        work = Topics.BACKUP_WORK
        result = topics_cli(stack, "check", *renamed(names, work))
        assert result.returncode == 1
        assert f"FAIL {names[work]} (contract {work}): missing" in result.stdout
        assert (
            f"python -m indutech_common.topics create --only {work} "
            f"--name {work}={names[work]}" in result.stderr
        )
        assert names[work] not in await admin.list_topics()

    async def test_an_auto_created_work_topic_is_mis_configured(
        self, stack: StackSettings, admin: AIOKafkaAdminClient, names: dict[str, str]
    ) -> None:
        """The issue's case: a work topic with one partition and the broker's defaults."""
        work, checkpoints = names[Topics.BACKUP_WORK], names[Topics.INGEST_CHECKPOINTS]
        await admin.create_topics(
            [
                NewTopic(work, num_partitions=1, replication_factor=1),
                NewTopic(checkpoints, num_partitions=1, replication_factor=1),
            ]
        )
        result = topics_cli(
            stack, "check", *renamed(names, Topics.BACKUP_WORK, Topics.INGEST_CHECKPOINTS)
        )
        assert result.returncode == 1
        assert "1 partition(s), the contract needs at least 12" in result.stdout
        assert "cleanup.policy=delete, the contract needs compact" in result.stdout
        assert "never changed automatically" in result.stderr

        # create leaves them as they are: a person decides (partitions re-route keys)
        assert topics_cli(stack, "create", *renamed(names, Topics.BACKUP_WORK)).returncode == 1
        assert await partition_count(admin, work) == 1

    async def test_production_environment_asks_for_three_replicas(
        self, stack: StackSettings, names: dict[str, str]
    ) -> None:
        """Topics made for one broker do not pass as production ones."""
        dead_letter = Topics.DEAD_LETTER
        assert topics_cli(stack, "create", *renamed(names, dead_letter)).returncode == 0
        result = topics_cli(
            stack, "check", "--environment", "production", *renamed(names, dead_letter)
        )
        assert result.returncode == 1
        assert "replication factor 1, the environment needs 3" in result.stdout
        assert "min.insync.replicas=1, the environment needs 2" in result.stdout

    async def test_check_bindings_reports_each_topic(
        self, stack: StackSettings, names: dict[str, str]
    ) -> None:
        bindings = contract_bindings([Topics.SENSOR_READINGS], names)
        (missing,) = await check_topics(stack.kafka, bindings)
        assert not missing.exists
        await create_topics(stack.kafka, bindings, environment="local")
        (present,) = await check_topics(stack.kafka, bindings, environment="local")
        assert present.ok
        assert present.partitions == 3


def refused_to_start(logs: list[MutableMapping[str, Any]], *topics: str) -> str:
    """The error a worker logged when it refused to start; it names every topic given."""
    (event,) = [e for e in logs if e["event"] == "worker_config_invalid"]
    error = str(event["error"])
    for topic in topics:
        assert topic in error, error
    assert "python -m indutech_common.topics create" in error
    return error


class TestWorkersCheckTheirTopicsAtStart:
    async def test_iot_ingest(self, stack: StackSettings, unique: str, tmp_path: Path) -> None:
        """A missing checkpoint topic and a delete-policy one both stop iot-ingest (exit 2)."""
        names = IngestTopics(
            sensor=f"test.{unique}.sensors",
            ticket=f"test.{unique}.tickets",
            dead_letter=f"test.{unique}.dlq",
            checkpoint=f"test.{unique}.checkpoints",
        )
        contract = names.contract()
        del contract[names.checkpoint]
        async with temporary_topics(stack.kafka, contract):
            settings = ingest_settings(stack, names, tmp_path, unique)
            with capture_logs() as logs:
                assert await IotIngestWorker(settings).serve(install_signal_handlers=False) == 2
            error = refused_to_start(logs, names.checkpoint)
            assert f"--name {Topics.INGEST_CHECKPOINTS}={names.checkpoint}" in error
            assert names.checkpoint not in await _existing(stack)

    async def test_iot_to_s3(self, stack: StackSettings, unique: str) -> None:
        """A dead-letter topic with one minute of retention stops iot-to-s3 (exit 2)."""
        lake = Lake(
            sensor_topic=f"test.{unique}.sensor-readings",
            ticket_topic=f"test.{unique}.client-tickets",
            dead_letter_topic=f"test.{unique}.dead-letter",
            prefix=f"tests/topics/{unique}/",
            group_id=f"test-topics-{unique}",
        )
        topics = {
            lake.sensor_topic: Topics.SENSOR_READINGS,
            lake.ticket_topic: Topics.CLIENT_TICKETS,
        }
        async with temporary_topics(stack.kafka, topics):
            admin = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
            await admin.start()
            try:
                short = {"retention.ms": "60000"}
                await admin.create_topics(
                    [NewTopic(lake.dead_letter_topic, 1, 1, topic_configs=short)]
                )
                with capture_logs() as logs:
                    worker = IotToS3Worker(lake_settings(stack, lake))
                    assert await worker.serve(install_signal_handlers=False) == 2
            finally:
                await admin.delete_topics([lake.dead_letter_topic])
                await admin.close()
        error = refused_to_start(logs, lake.dead_letter_topic)
        assert "retention.ms=60000" in error

    async def test_sql_backup_worker(self, stack: StackSettings, unique: str) -> None:
        """A one-partition work topic (what auto-creation makes) stops the worker (exit 2)."""
        erp = Erp(
            schema=f"sb_{unique}",
            prefix=f"tests/topics/{unique}/",
            target_schema=f"sb_restore_{unique}",
            work_topic=f"test.{unique}.sql-backup-work",
            completed_topic=f"test.{unique}.sql-backup-completed",
            group_id=f"test-topics-{unique}",
        )
        async with temporary_topics(stack.kafka, {erp.completed_topic: Topics.BACKUP_COMPLETED}):
            admin = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
            await admin.start()
            try:
                await admin.create_topics([NewTopic(erp.work_topic, 1, 1)])
                with capture_logs() as logs:
                    worker = SqlBackupWorker(backup_settings(stack, erp))
                    assert await worker.serve(install_signal_handlers=False) == 2
            finally:
                await admin.delete_topics([erp.work_topic])
                await admin.close()
        error = refused_to_start(logs, erp.work_topic)
        assert "1 partition(s), the contract needs at least 12" in error

    async def test_sql_backup_scheduler(self, stack: StackSettings, unique: str) -> None:
        """The nightly scheduler checks at start, not hours later at its first delta."""
        erp = Erp(
            schema=f"sb_{unique}",
            prefix=f"tests/topics/{unique}/",
            target_schema=f"sb_restore_{unique}",
            work_topic=f"test.{unique}.sql-backup-work",
            completed_topic=f"test.{unique}.sql-backup-completed",
            group_id=f"test-topics-{unique}",
        )
        with capture_logs() as logs:
            scheduler = DeltaScheduler(backup_settings(stack, erp))
            assert await scheduler.serve(install_signal_handlers=False) == 2
        refused_to_start(logs, erp.work_topic, erp.completed_topic)

    async def test_identity_sync_audit_topic(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        """With an audit topic configured, identity-sync checks it before it binds to a DC."""
        topic = f"test.identity-changes.{unique}"
        # Roots that do not exist: were the check ever skipped, this sync would write nothing
        # to the shared directories.
        example = (REPO_ROOT / "services/identity-sync/mapping.example.toml").read_text()
        mapping = tmp_path / "mapping.toml"
        mapping.write_text(
            example.replace("OU=InduTech,", f"OU=absent-{unique},").replace(
                "OU=AWS,", f"OU=absent-{unique},"
            )
        )
        settings = IdentitySyncSettings(
            onprem=stack.ad_onprem,
            aws=stack.ad_aws,
            s3=stack.s3,
            mapping_file=mapping,
            state_bucket=stack.s3.backup_bucket,
            state_key="unused",
            health={"host": "127.0.0.1", "port": 0},
            audit_kafka=stack.kafka,
            audit_topic=topic,
        )
        with capture_logs() as logs:
            worker = IdentitySyncWorker(settings, once=True, store=MemoryStateStore())
            assert await worker.serve(install_signal_handlers=False) == 2
        refused_to_start(logs, topic)


async def _existing(stack: StackSettings) -> set[str]:
    admin = AIOKafkaAdminClient(**connection_kwargs(stack.kafka))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_temporary_topics_follow_the_contract(stack: StackSettings, unique: str) -> None:
    """The test helper creates what the workers' check accepts, and deletes it after."""
    name = f"test.{unique}.work"
    async with temporary_topics(stack.kafka, {name: Topics.BACKUP_WORK}):
        (report,) = await check_topics(
            stack.kafka, [TopicBinding.of(name, Topics.BACKUP_WORK)], environment="local"
        )
        assert report.ok
        assert report.partitions == 12
    assert name not in await _existing(stack)
