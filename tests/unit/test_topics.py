"""The topic contract and how a broker's topic is judged against it (no Kafka needed)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from indutech_common import topics as cli
from indutech_common.kafka.topics import (
    TopicBinding,
    TopicReport,
    contract_bindings,
    fix_hint,
    judge,
)
from indutech_common.schemas.topics import (
    CONTRACT,
    ENVIRONMENTS,
    Topics,
    contract_spec,
)
from indutech_common.settings import load_settings
from tests.support.stack import REPO_ROOT

DESIGN_TABLE_TOPICS = {
    "iot.sensor-readings.v1",
    "iot.client-tickets.v1",
    "iot.dead-letter.v1",
    "sql.backup-work.v1",
    "sql.backup-completed.v1",
    "identity.changes.v1",
}


def report(
    contract: str,
    *,
    partitions: int | None = None,
    replication_factor: int = 1,
    **configs: str,
) -> TopicReport:
    spec = contract_spec(contract)
    defaults = {"cleanup.policy": spec.cleanup_policy, "min.insync.replicas": "1"}
    if spec.retention_ms is not None:
        defaults["retention.ms"] = str(spec.retention_ms)
    return TopicReport(
        TopicBinding(f"test.{contract}", spec),
        exists=True,
        partitions=spec.partitions if partitions is None else partitions,
        replication_factor=replication_factor,
        configs=defaults | {k.replace("_", "."): v for k, v in configs.items()},
    )


class TestContract:
    def test_every_topic_the_workers_use_is_in_the_contract(self) -> None:
        """DESIGN.md's table, plus iot-ingest's checkpoints; every name constant has an entry."""
        names = [spec.name for spec in CONTRACT]
        assert len(names) == len(set(names))
        constants = {v for k, v in vars(Topics).items() if k.isupper()}
        assert set(names) == constants == DESIGN_TABLE_TOPICS | {Topics.INGEST_CHECKPOINTS}

    def test_retention_matches_the_cleanup_policy(self) -> None:
        """Compacted topics are never deleted by age; delete topics say how long they keep."""
        for spec in CONTRACT:
            assert (spec.retention_ms is None) == (spec.cleanup_policy == "compact"), spec.name
            assert spec.producers, spec.name
            assert spec.why, spec.name

    def test_the_work_topic_lets_replicas_share_the_work(self) -> None:
        """The issue's case: more than one partition, or one replica does all the work."""
        assert contract_spec(Topics.BACKUP_WORK).partitions >= 12
        assert contract_spec(Topics.INGEST_CHECKPOINTS).cleanup_policy == "compact"

    def test_configs_carry_the_environment(self) -> None:
        spec = contract_spec(Topics.DEAD_LETTER)
        assert spec.configs(ENVIRONMENTS["production"]) == {
            "cleanup.policy": "delete",
            "min.insync.replicas": "2",
            "retention.ms": str(30 * 24 * 3600 * 1000),
        }
        assert "retention.ms" not in contract_spec(Topics.INGEST_CHECKPOINTS).configs(
            ENVIRONMENTS["local"]
        )

    def test_unknown_name_lists_the_known_ones(self) -> None:
        with pytest.raises(KeyError, match=re.escape("iot.sensor-readings.v1")):
            contract_spec("iot.sensor-readings.v2")
        with pytest.raises(KeyError, match="not a topic of the contract"):
            contract_bindings(["nope"])

    def test_bindings_rename_and_select(self) -> None:
        bindings = contract_bindings(
            [Topics.DEAD_LETTER, Topics.BACKUP_WORK], {Topics.DEAD_LETTER: "test.x.dlq"}
        )
        assert [(b.name, b.spec.name, b.renamed) for b in bindings] == [
            ("test.x.dlq", Topics.DEAD_LETTER, True),
            (Topics.BACKUP_WORK, Topics.BACKUP_WORK, False),
        ]


class TestJudge:
    def test_a_topic_as_the_contract_says_is_ok(self) -> None:
        for spec in CONTRACT:
            checked = report(spec.name)
            judge(checked, ENVIRONMENTS["local"])
            assert checked.ok, checked.problems

    def test_fewer_partitions_is_a_problem_more_is_a_note(self) -> None:
        fewer = report(Topics.BACKUP_WORK, partitions=1)
        judge(fewer, None)
        assert fewer.problems == ["1 partition(s), the contract needs at least 12"]
        more = report(Topics.BACKUP_WORK, partitions=48)
        judge(more, None)
        assert more.ok
        assert more.notes == ["48 partitions (contract: 12)"]

    @pytest.mark.parametrize("policy", ["delete", "compact,delete", "delete,compact"])
    def test_checkpoints_must_be_compacted_only(self, policy: str) -> None:
        """Deleting by age (alone or with compaction) would drop checkpoints: files re-read."""
        checked = report(Topics.INGEST_CHECKPOINTS, cleanup_policy=policy)
        judge(checked, None)
        assert checked.problems == [f"cleanup.policy={policy}, the contract needs compact"]

    def test_record_topics_must_not_be_compacted(self) -> None:
        checked = report(Topics.SENSOR_READINGS, cleanup_policy="compact")
        judge(checked, None)
        assert not checked.ok

    @pytest.mark.parametrize(
        ("retention", "ok"), [("-1", True), ("2592000000", True), ("604800000", False)]
    )
    def test_retention_shorter_than_the_contract(self, retention: str, ok: bool) -> None:
        checked = report(Topics.DEAD_LETTER, retention_ms=retention)
        judge(checked, None)
        assert checked.ok is ok
        assert checked.retention_too_short is not ok

    def test_min_isr_above_the_replication_factor_blocks_every_write(self) -> None:
        checked = report(Topics.DEAD_LETTER, min_insync_replicas="2")
        judge(checked, None)
        (problem,) = checked.problems
        assert problem.startswith("min.insync.replicas=2 exceeds the replication factor 1")

    def test_environment_durability(self) -> None:
        """Without an environment (a worker's check) one replica passes; production asks 3."""
        lone = report(Topics.DEAD_LETTER)
        judge(lone, None)
        assert lone.ok
        production = report(Topics.DEAD_LETTER)
        judge(production, ENVIRONMENTS["production"])
        assert production.problems == [
            "replication factor 1, the environment needs 3",
            "min.insync.replicas=1, the environment needs 2",
        ]
        replicated = report(Topics.DEAD_LETTER, replication_factor=3, min_insync_replicas="2")
        judge(replicated, ENVIRONMENTS["production"])
        assert replicated.ok


class TestFixHint:
    def test_missing_renamed_topic_gets_the_exact_command(self) -> None:
        missing = TopicReport(TopicBinding.of("test.a b", Topics.DEAD_LETTER))
        hint = fix_hint([missing])
        assert (
            "python -m indutech_common.topics create --only iot.dead-letter.v1 "
            "--name 'iot.dead-letter.v1=test.a b'" in hint
        )
        assert missing.describe() == "test.a b (contract iot.dead-letter.v1): missing"

    def test_mis_configured_topic_is_left_to_a_person(self) -> None:
        wrong = report(Topics.BACKUP_WORK, partitions=1)
        judge(wrong, None)
        hint = fix_hint([wrong])
        assert "never changed automatically" in hint
        assert "add-partitions" in hint
        assert "--only" not in hint


class TestCommandLine:
    def test_help_names_the_commands_and_settings(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_:
            cli.main(["--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        for word in ("create", "check", "list", "INDUTECH_TOPICS_KAFKA__BOOTSTRAP_SERVERS"):
            assert word in out

    def test_list_needs_no_kafka(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli.main(["list"]) == 0
        out = capsys.readouterr().out
        assert all(spec.name in out for spec in CONTRACT)
        assert "environment production: replication factor 3" in out

    def test_architecture_doc_shows_the_contract(self, capsys: pytest.CaptureFixture[str]) -> None:
        """docs/architecture.md carries the table `list --format markdown` prints."""
        assert cli.main(["list", "--format", "markdown"]) == 0
        table = capsys.readouterr().out.strip()
        assert table == cli.contract_markdown()
        assert table in (REPO_ROOT / "docs/architecture.md").read_text()

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["check", "--only", "iot.sensor-readings.v2"], "not a topic of the contract"),
            (["create", "--name", "nope=x"], "not a topic of the contract"),
            (
                ["create", "--partitions-override", "sql.backup-work.v1=4"],
                "below the contract's 12",
            ),
        ],
    )
    def test_bad_arguments_exit_2_before_any_connection(
        self,
        argv: list[str],
        message: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        # nothing listens on port 1: reaching Kafka would fail differently (exit 1)
        monkeypatch.setenv("INDUTECH_TOPICS_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
        monkeypatch.setenv("INDUTECH_TOPICS_KAFKA__SECURITY_PROTOCOL", "PLAINTEXT")
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err

    def test_missing_kafka_settings_exit_2(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        for name in [n for n in os.environ if n.startswith("INDUTECH_")]:
            monkeypatch.delenv(name)
        assert cli.main(["check"]) == 2
        assert re.search(r"kafka.*INDUTECH_TOPICS_KAFKA", capsys.readouterr().err)


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


class TestDeployments:
    """Compose and Kubernetes run the same command, with settings that validate."""

    def test_kubernetes_job_runs_create_with_valid_settings(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """deploy/k8s (rendered from the chart) runs `create` with the topics' own user."""
        k8s = REPO_ROOT / "deploy/k8s"
        (top,) = _yaml_documents(k8s / "kustomization.yaml")
        assert "topics.yaml" in top["resources"]
        objects = _yaml_documents(k8s / "topics.yaml")
        (job,) = [o for o in objects if o["kind"] == "Job"]
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"][:3] == ["python", "-m", "indutech_common.topics"]
        args = cli.build_parser().parse_args(container["args"][3:])
        assert args.command == "create"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True

        maps = {
            o["metadata"]["name"]: o["data"]
            for o in [*objects, *_yaml_documents(k8s / "base.yaml")]
            if o["kind"] == "ConfigMap"
        }
        env: dict[str, str] = {}
        for source in container["envFrom"]:
            env |= {k: str(v) for k, v in maps[source["configMapRef"]["name"]].items()}
        for name in [n for n in os.environ if n.startswith("INDUTECH_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(
                name, str(tmp_path / value.lstrip("/")) if value[:1] == "/" else value
            )
        secrets = tmp_path / "var/run/secrets/indutech"
        secrets.mkdir(parents=True)
        (secrets / "kafka__password").write_text("from-the-secret-volume\n")
        settings = load_settings(cli.TopicsSettings)
        assert settings.environment == "local"  # deploy/k8s is values-local (one broker)
        assert settings.kafka.security_protocol == "SASL_SSL"
        assert settings.kafka.username == "indutech-admin"
        assert settings.kafka.password is not None

    def test_compose_runs_create_and_redpanda_does_not_auto_create(self) -> None:
        (compose,) = _yaml_documents(REPO_ROOT / "deploy/compose/compose.yaml")
        services = compose["services"]
        assert services["topics"]["command"] == ["python", "-m", "indutech_common.topics", "create"]
        # Cluster properties of compose's Redpanda (read on its first start)
        (bootstrap,) = _yaml_documents(REPO_ROOT / "deploy/compose/redpanda/bootstrap.yaml")
        assert bootstrap["auto_create_topics_enabled"] is False

    def test_local_stack_uses_the_command_and_disables_auto_creation(self) -> None:
        script = (REPO_ROOT / "deploy/local/components/kafka.sh").read_text()
        assert "-m indutech_common.topics create" in script
        assert "auto.create.topics.enable=false" in script
        assert "iot.sensor-readings.v1" not in script  # one list of topics: the contract
