"""`metrics-shipper alarms` and `dashboard` against moto's CloudWatch: twice is once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from indutech_common.cloudwatch import create_cloudwatch_client
from indutech_metrics_shipper.alarms import SEED_ALARMS, apply, existing_alarms
from indutech_metrics_shipper.dashboard import apply_dashboard, body
from tests.support.stack import REPO_ROOT, StackSettings


async def delete_alarms(stack: StackSettings, prefix: str) -> None:
    async with create_cloudwatch_client(stack.cloudwatch) as client:
        names = list(await existing_alarms(client, prefix))
        if names:
            await client.delete_alarms(AlarmNames=names)


class TestAlarms:
    async def test_apply_creates_then_changes_nothing(
        self, stack: StackSettings, unique: str
    ) -> None:
        prefix = f"test-{unique}-"
        try:
            async with create_cloudwatch_client(stack.cloudwatch) as client:
                first = await apply(client, prefix=prefix, namespace="InduTech/Flows")
                assert {c.action for c in first} == {"create"}
                found = await existing_alarms(client, prefix)
                assert set(found) == {s.name(prefix) for s in SEED_ALARMS}
                lag = found[f"{prefix}flow6-ad-sync-lag"]
                assert (lag["Threshold"], lag["ComparisonOperator"]) == (
                    60.0,
                    "GreaterThanThreshold",
                )
                assert lag["TreatMissingData"] == "notBreaching"
                files = found[f"{prefix}flow2-s3-files-per-day"]
                assert files["Threshold"] == 100.0
                assert files["TreatMissingData"] == "breaching"
                second = await apply(client, prefix=prefix, namespace="InduTech/Flows")
                assert {c.action for c in second} == {"unchanged"}
                # a threshold changed by hand is put back, and said so
                await client.put_metric_alarm(
                    **{
                        **{k: lag[k] for k in ("AlarmName", "ComparisonOperator")},
                        "EvaluationPeriods": lag["EvaluationPeriods"],
                        "Threshold": 999.0,
                        "Metrics": lag["Metrics"],
                    }
                )
                third = await apply(client, prefix=prefix, namespace="InduTech/Flows", dry_run=True)
                [update] = [c for c in third if c.action == "update"]
                assert update.name == f"{prefix}flow6-ad-sync-lag"
                assert "Threshold" in update.fields
                still = (await existing_alarms(client, prefix))[update.name]
                assert still["Threshold"] == 999.0  # the dry run wrote nothing
        finally:
            await delete_alarms(stack, prefix)

    def test_cli_dry_run_lists_each_alarm_and_the_rows_not_yet_expressed(
        self, stack: StackSettings, unique: str
    ) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("METRICS_SHIPPER_")},
            "METRICS_SHIPPER_ALARM_PREFIX": f"test-{unique}-",
            "METRICS_SHIPPER_HEALTH__PORT": "0",
        }
        cloudwatch = stack.cloudwatch
        assert cloudwatch.endpoint_url is not None
        assert cloudwatch.access_key_id is not None
        assert cloudwatch.secret_access_key is not None
        env |= {
            "METRICS_SHIPPER_CLOUDWATCH__ENDPOINT_URL": cloudwatch.endpoint_url,
            "METRICS_SHIPPER_CLOUDWATCH__REGION": cloudwatch.region,
            "METRICS_SHIPPER_CLOUDWATCH__ACCESS_KEY_ID": (
                cloudwatch.access_key_id.get_secret_value()
            ),
            "METRICS_SHIPPER_CLOUDWATCH__SECRET_ACCESS_KEY": (
                cloudwatch.secret_access_key.get_secret_value()
            ),
            "METRICS_SHIPPER_CLOUDWATCH__CA_FILE": str(cloudwatch.ca_file),
        }
        result = subprocess.run(
            [sys.executable, "-m", "indutech_metrics_shipper", "alarms", "--dry-run"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert sum(line.startswith("create") for line in lines) == len(SEED_ALARMS)
        assert sum(line.startswith("not yet") for line in lines) == 2
        assert lines[-1] == "dry run: nothing written"


class TestDashboard:
    async def test_written_and_read_back_the_same_twice(
        self, stack: StackSettings, unique: str
    ) -> None:
        name = f"test-{unique}"
        async with create_cloudwatch_client(stack.cloudwatch) as client:
            try:
                for _ in range(2):
                    problems = await apply_dashboard(
                        client, name=name, namespace="InduTech/Flows", region="eu-west-1"
                    )
                    assert problems == []
                    stored = await client.get_dashboard(DashboardName=name)
                    assert json.loads(stored["DashboardBody"]) == body(
                        "InduTech/Flows", "eu-west-1"
                    )
            finally:
                await client.delete_dashboards(DashboardNames=[name])
