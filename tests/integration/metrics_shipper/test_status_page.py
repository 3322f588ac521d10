"""The status page, served by a running shipper and opened in a real headless Chromium."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path

from indutech_common.settings import HealthSettings
from indutech_metrics_shipper.config import MetricsShipperSettings
from indutech_metrics_shipper.worker import MetricsShipperWorker
from tests.integration.metrics_shipper.test_shipping import metrics_endpoint, wait_until
from tests.support.stack import StackSettings

CHROMIUM = "/usr/bin/chromium"
# As this machine kind runs it: no sandbox as root, nothing fetched from outside.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which(CHROMIUM), "chromium is missing: `make stack-up` installs it"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


class TestStatusPage:
    async def test_the_seven_flows_and_their_states_in_a_browser(
        self, stack: StackSettings, unique: str, tmp_path: Path
    ) -> None:
        async with (
            metrics_endpoint("iot-to-s3") as (lake, lake_url),
            metrics_endpoint("identity-sync") as (identity, identity_url),
        ):
            lake.records_out.labels("iot-to-s3", "s").inc(10)
            lake.lag.labels("iot-to-s3", "s").set(900)  # over the seed's 10 min: red
            identity.lag.labels("identity-sync", "directory").set(0.4)
            identity.last_success.labels("identity-sync").set_to_current_time()
            settings = MetricsShipperSettings(
                cloudwatch=stack.cloudwatch.model_copy(),
                namespace=f"InduTech/Test/{unique}",
                targets=(lake_url, identity_url),
                interval_s=10,
                health=HealthSettings(host="127.0.0.1", port=0),
            )
            shipper = MetricsShipperWorker(settings)
            task = asyncio.create_task(shipper.serve(install_signal_handlers=False))
            try:
                await wait_until(lambda: shipper.cycles >= 1, timeout_s=30)
                url = f"http://127.0.0.1:{shipper.health.port}/status"
                dom = await asyncio.to_thread(chromium, tmp_path, "--dump-dom", url)
                screenshot = tmp_path / "status.png"
                await asyncio.to_thread(
                    chromium, tmp_path, f"--screenshot={screenshot}", "--window-size=1400,700", url
                )
            finally:
                shipper.request_exit()
                assert await task == 0
        states = dict(re.findall(r'data-flow="(\d)" data-state="(\w+)"', dom.stdout))
        assert states == {
            "1": "grey",  # no target given for iot-ingest
            "2": "red",
            "3": "grey",
            "4": "grey",
            "5": "grey",  # no target given for sql-to-redshift
            "6": "green",
            "7": "grey",
        }
        assert "lag 900 s &gt; 600 s" in dom.stdout
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert screenshot.stat().st_size > 10_000  # a rendered table, not an empty page
