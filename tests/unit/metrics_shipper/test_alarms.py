"""The seed's alarm table as specs, and the plan that makes a second apply change nothing."""

from __future__ import annotations

import re

from indutech_common.metrics import WorkerMetrics
from indutech_metrics_shipper.alarms import SEED_ALARMS, desired, plan
from tests.support.stack import REPO_ROOT

PREFIX = "indutech-"
NAMESPACE = "InduTech/Flows"


def wanted() -> list[dict[str, object]]:
    return [desired(s, prefix=PREFIX, namespace=NAMESPACE) for s in SEED_ALARMS]


class TestSpecs:
    def test_the_seed_thresholds(self) -> None:
        """The seed's table, in seconds and counts, per flow."""
        by_slug = {(s.flow, s.slug): (s.comparison, s.threshold) for s in SEED_ALARMS}
        assert by_slug == {
            (1, "broker-lag-iot-to-s3"): ("GreaterThanThreshold", 300),
            (1, "broker-lag-iot-aggregator"): ("GreaterThanThreshold", 300),
            (2, "s3-write-latency"): ("GreaterThanThreshold", 600),
            (2, "s3-files-per-day"): ("LessThanThreshold", 100),
            (3, "warehouse-ingestion-lag"): ("GreaterThanThreshold", 3600),
            (3, "warehouse-queue"): ("GreaterThanThreshold", 100),
            (4, "backup-errors"): ("GreaterThanThreshold", 0),
            (4, "backup-duration"): ("GreaterThanThreshold", 7200),
            (5, "loader-lag"): ("GreaterThanThreshold", 1800),
            (5, "loader-errors"): ("GreaterThanThreshold", 0),
            (6, "ad-sync-lag"): ("GreaterThanThreshold", 60),
            (6, "ad-sync-errors"): ("GreaterThanThreshold", 0),
            (7, "log-delivery"): ("GreaterThanThreshold", 300),
            (7, "shipper-errors"): ("GreaterThanThreshold", 0),
            (7, "shipper-stale"): ("LessThanThreshold", 1),
        }

    def test_every_flow_of_the_seed_has_an_alarm(self) -> None:
        assert {s.flow for s in SEED_ALARMS} == set(range(1, 8))

    def test_the_backup_and_loader_rows_read_their_workers_metrics(self) -> None:
        queries = {
            s.slug: desired(s, prefix=PREFIX, namespace=NAMESPACE)["Metrics"][0]["Expression"]
            for s in SEED_ALARMS
            if s.flow in (4, 5)
        }
        assert queries == {
            "backup-errors": 'SELECT SUM(indutech_errors) FROM "InduTech/Flows" '
            "WHERE worker = 'sql-backup'",
            "backup-duration": "SELECT MAX(indutech_sql_backup_backup_duration_seconds) "
            "FROM \"InduTech/Flows\" WHERE worker = 'sql-backup'",
            "loader-lag": "SELECT MAX(indutech_sql_to_redshift_lag_seconds) "
            "FROM \"InduTech/Flows\" WHERE worker = 'sql-to-redshift'",
            "loader-errors": 'SELECT SUM(indutech_errors) FROM "InduTech/Flows" '
            "WHERE worker = 'sql-to-redshift'",
        }

    def test_every_metric_an_alarm_reads_is_exported_by_a_worker(self) -> None:
        """A misspelt name would make an alarm that never fires (missing data: not breaching)."""
        common = {family.name for family in WorkerMetrics("probe").registry.collect()}
        sources = "\n".join(
            path.read_text()
            for root in (REPO_ROOT / "libs" / "common" / "src", *REPO_ROOT.glob("services/*/src"))
            for path in root.rglob("*.py")
            if path.name != "alarms.py"  # the alarms' own names prove nothing
        )
        read = set()
        for spec in SEED_ALARMS:
            read |= set(re.findall(r"\bindutech_[a-z_]+", spec.insights or ""))
            read |= {metric for metric, _ in spec.daily_sum_of}
        assert "indutech_sql_to_redshift_lag_seconds" in read
        for name in sorted(read):
            assert name in common or f'"{name}"' in sources, f"{name}: no worker exports it"

    def test_insights_query_names_the_namespace_quoted(self) -> None:
        params = desired(SEED_ALARMS[0], prefix=PREFIX, namespace=NAMESPACE)
        [query] = params["Metrics"]
        assert query["Expression"] == (
            'SELECT MAX(indutech_kafka_consumer_lag_seconds) FROM "InduTech/Flows" '
            "WHERE consumer_group = 'iot-to-s3'"
        )
        assert params["AlarmName"] == "indutech-flow1-broker-lag-iot-to-s3"

    def test_missing_data_breaches_where_silence_is_the_failure(self) -> None:
        breaching = {s.slug for s in SEED_ALARMS if s.missing == "breaching"}
        assert breaching == {"s3-files-per-day", "shipper-stale"}


class TestPlan:
    def test_missing_alarms_are_created(self) -> None:
        changes = plan(wanted(), {}, prefix=PREFIX)
        assert {c.action for c in changes} == {"create"}
        assert len(changes) == len(SEED_ALARMS)

    def test_identical_alarms_are_unchanged(self) -> None:
        existing = {str(p["AlarmName"]): dict(p) for p in wanted()}
        changes = plan(wanted(), existing, prefix=PREFIX)
        assert {c.action for c in changes} == {"unchanged"}

    def test_a_changed_threshold_is_an_update_naming_the_field(self) -> None:
        existing = {str(p["AlarmName"]): dict(p) for p in wanted()}
        existing["indutech-flow6-ad-sync-lag"]["Threshold"] = 120.0
        [update] = [c for c in plan(wanted(), existing, prefix=PREFIX) if c.action == "update"]
        assert (update.name, update.fields) == ("indutech-flow6-ad-sync-lag", ("Threshold",))

    def test_our_alarms_nobody_wants_are_reported_not_deleted(self) -> None:
        existing = {"indutech-flow9-old": {"AlarmName": "indutech-flow9-old"}}
        changes = plan(wanted(), existing, prefix=PREFIX)
        assert [c.describe() for c in changes if c.action == "unmanaged"] == [
            "unmanaged indutech-flow9-old"
        ]
