"""The README's demo command keeps working (its flows part, short, on the real stack),
and no secret reaches its output or the workers' logs."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from indutech_common.warehouse import connect_warehouse
from tests.support.stack import REPO_ROOT, StackSettings


async def schemas_like(stack: StackSettings, pattern: str) -> list[str]:
    connection = await connect_warehouse(stack.warehouse)
    try:
        rows = await connection.fetch(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE $1",
            pattern,
        )
    finally:
        await connection.close()
    return [row[0] for row in rows]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_demo_runs_every_built_flow_end_to_end(stack: StackSettings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDUTECH_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "deploy/local/demo_flows.py", "--seconds", "3", "--rate", "500"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exactly once" in result.stdout
    assert "aggregates: equal to the generated records: True" in result.stdout
    assert "iot-aggregator: SIGTERM → drained and exited 0" in result.stdout
    assert "status page of the seven flows: http://127.0.0.1:18180/status" in result.stdout
    states = re.search(r"status page http://127\.0\.0\.1:18180/status: (.*)", result.stdout)
    assert states is not None, result.stdout
    assert [f"flow {n}" for n in range(1, 8)] == re.findall(r"flow \d", states.group(1))
    delivered = re.search(r"metrics-shipper: (\d+) datums and (\d+) log lines", result.stdout)
    assert delivered is not None, result.stdout
    assert int(delivered.group(1)) > 0
    assert int(delivered.group(2)) > 0
    assert "metrics-shipper: SIGTERM → drained and exited 0" in result.stdout
    assert "both sides equal: True" in result.stdout
    assert "restored tables equal the source: True" in result.stdout
    # flow 5: the worker loaded both nights of every table from the announcements, verify
    # and the reconciliation with the source passed, the SCD2 history shows the delta
    assert "sql-to-redshift: 6/6 tables loaded up to 2026-03-02" in result.stdout
    assert "sql-to-redshift: SIGTERM → drained and exited 0" in result.stdout
    assert "reconciliation: warehouse equals the source: True" in result.stdout
    assert "fact_order_line: " in result.stdout
    assert "source joined equal: True" in result.stdout
    assert "SCD2 history: two versions, closed and opened on 2026-03-02: True" in result.stdout
    history = re.findall(
        r"(\d{4}-\d{2}-\d{2}) (\d{4}-\d{2}-\d{2}) +(True|False)$", result.stdout, re.M
    )
    assert history == [("2026-03-01", "2026-03-02", "False"), ("2026-03-02", "9999-12-31", "True")]
    verified = re.findall(r"^ +(\w+): ok: 2026-03-02 delta", result.stdout, re.M)
    assert sorted(verified) == sorted(
        ["customers", "products", "orders", "order_lines", "invoices", "gl_entries"]
    )
    chunks = re.search(r"(\d+) work items → (\d+) parts in S3", result.stdout)
    assert chunks is not None, result.stdout
    assert chunks.group(1) == chunks.group(2) != "0"  # one part per chunk
    match = re.search(r"worker logs in (\S+)", result.stdout)
    assert match is not None, result.stdout
    log_files = {path.name: path for path in Path(match.group(1)).glob("*.log")}
    assert {
        "iot-ingest.log",
        "iot-to-s3.log",
        "iot-aggregator.log",
        "sql-backup-0.log",
        "sql-backup-1.log",
        "metrics-shipper.log",
        "sql-to-redshift.log",
    } <= set(log_files)
    # the worker's JSON log shows it applied the nights it was told of
    assert '"event": "night_applied"' in log_files["sql-to-redshift.log"].read_text()
    # the run's aggregate schema was created (the table was printed from it), then dropped
    run = Path(match.group(1)).name
    assert f"aggregates in demo_agg_{run} " in result.stdout
    assert asyncio.run(schemas_like(stack, f"demo_agg_{run}")) == []
    assert asyncio.run(schemas_like(stack, f"demo_%_{run}")) == []  # flow 5's raw and models
    logs = [path.read_text(errors="replace") for path in log_files.values()]
    # JSON logs, so the scan below reads real output
    assert '"event": "' in log_files["iot-ingest.log"].read_text()
    secrets = [
        secret.get_secret_value()
        for secret in (
            stack.kafka.password,
            stack.s3.secret_access_key,
            stack.ad_onprem.password,
            stack.ad_aws.password,
            stack.erp.password,
            stack.warehouse.password,
        )
        if secret is not None
    ]
    assert len(secrets) == 6
    for text in [result.stdout, result.stderr, *logs]:
        for secret in secrets:
            assert secret not in text
