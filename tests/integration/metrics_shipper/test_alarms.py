"""`metrics-shipper alarms` and `dashboard` against moto's CloudWatch: twice is once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

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
                # the rows that waited for sql-backup's duration and for sql-to-redshift
                for name, threshold, metric in (
                    (
                        "flow4-backup-duration",
                        7200.0,
                        "indutech_sql_backup_backup_duration_seconds",
                    ),
                    ("flow5-loader-lag", 1800.0, "indutech_sql_to_redshift_lag_seconds"),
                    ("flow5-loader-errors", 0.0, "indutech_errors"),
                ):
                    alarm = found[f"{prefix}{name}"]
                    assert alarm["Threshold"] == threshold, name
                    assert alarm["ComparisonOperator"] == "GreaterThanThreshold", name
                    [query] = alarm["Metrics"]
                    assert f"({metric})" in query["Expression"], name
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

    @pytest.mark.parametrize("words", [["alarms", "apply"], ["alarms"]])
    def test_cli_dry_run_lists_each_alarm_and_writes_nothing(
        self, stack: StackSettings, unique: str, words: list[str]
    ) -> None:
        """``alarms apply --dry-run`` (the issue's spelling) and ``alarms --dry-run`` alike."""
        prefix = f"test-{unique}-"
        result = run_cli(stack, prefix, *words, "--dry-run")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert sorted(line.split()[1] for line in lines[:-1]) == sorted(
            s.name(prefix) for s in SEED_ALARMS
        )
        assert {line.split()[0] for line in lines[:-1]} == {"create"}
        assert lines[-1] == "dry run: nothing written"
        assert not any("not yet" in line for line in lines)

    async def test_cli_apply_writes_then_changes_nothing(
        self, stack: StackSettings, unique: str
    ) -> None:
        prefix = f"test-{unique}-"
        try:
            first = await asyncio.to_thread(run_cli, stack, prefix, "alarms", "apply")
            assert first.returncode == 0, first.stderr
            async with create_cloudwatch_client(stack.cloudwatch) as client:
                found = await existing_alarms(client, prefix)
            assert set(found) == {s.name(prefix) for s in SEED_ALARMS}
            second = await asyncio.to_thread(run_cli, stack, prefix, "alarms", "apply")
            assert second.returncode == 0, second.stderr
            assert {line.split()[0] for line in second.stdout.splitlines()} == {"unchanged"}
        finally:
            await delete_alarms(stack, prefix)

    def test_apply_belongs_to_alarms_only(self, stack: StackSettings, unique: str) -> None:
        result = run_cli(stack, f"test-{unique}-", "dashboard", "apply")
        assert result.returncode == 2
        assert "metrics-shipper alarms apply" in result.stderr


def run_cli(stack: StackSettings, prefix: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``metrics-shipper ARGV`` against moto's CloudWatch, as an operator runs it."""
    cloudwatch = stack.cloudwatch
    assert cloudwatch.endpoint_url is not None
    assert cloudwatch.access_key_id is not None
    assert cloudwatch.secret_access_key is not None
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("METRICS_SHIPPER_")},
        "METRICS_SHIPPER_ALARM_PREFIX": prefix,
        "METRICS_SHIPPER_HEALTH__PORT": "0",
        "METRICS_SHIPPER_CLOUDWATCH__ENDPOINT_URL": cloudwatch.endpoint_url,
        "METRICS_SHIPPER_CLOUDWATCH__REGION": cloudwatch.region,
        "METRICS_SHIPPER_CLOUDWATCH__ACCESS_KEY_ID": cloudwatch.access_key_id.get_secret_value(),
        "METRICS_SHIPPER_CLOUDWATCH__SECRET_ACCESS_KEY": (
            cloudwatch.secret_access_key.get_secret_value()
        ),
        "METRICS_SHIPPER_CLOUDWATCH__CA_FILE": str(cloudwatch.ca_file),
    }
    return subprocess.run(
        [sys.executable, "-m", "indutech_metrics_shipper", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
