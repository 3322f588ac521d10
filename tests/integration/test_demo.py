"""The README's demo command keeps working: its flows part, short, on the real stack."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.stack import REPO_ROOT, StackSettings


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_runs_every_built_flow_end_to_end(stack: StackSettings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDUTECH_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "deploy/local/demo_flows.py", "--seconds", "3", "--rate", "500"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "exactly once" in result.stdout
    assert "both sides equal: True" in result.stdout
    assert stack.kafka.password is not None
    assert stack.kafka.password.get_secret_value() not in result.stdout + result.stderr
