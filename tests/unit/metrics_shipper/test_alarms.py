"""The seed's alarm table as specs, and the plan that makes a second apply change nothing."""

from __future__ import annotations

from indutech_metrics_shipper.alarms import NOT_YET, SEED_ALARMS, desired, plan

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
            (6, "ad-sync-lag"): ("GreaterThanThreshold", 60),
            (6, "ad-sync-errors"): ("GreaterThanThreshold", 0),
            (7, "log-delivery"): ("GreaterThanThreshold", 300),
            (7, "shipper-errors"): ("GreaterThanThreshold", 0),
            (7, "shipper-stale"): ("LessThanThreshold", 1),
        }

    def test_rows_without_a_metric_are_said_not_hidden(self) -> None:
        assert {flow for flow, _, _ in NOT_YET} == {4, 5}

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
