"""The worker lifecycle: drain on SIGTERM within the deadline, exit codes, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from indutech_common.cli import EXIT_CONFIG
from indutech_common.errors import ConfigError
from indutech_common.lifecycle import Worker
from indutech_common.protocols import Resource
from indutech_common.settings import WorkerSettings
from tests.support.sample_worker import SampleSettings, SampleWorker
from tests.support.stack import REPO_ROOT

EXIT_DRAIN_TIMEOUT = 3


def start_worker(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[str], Path]:
    journal = tmp_path / "journal.txt"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SAMPLE_", "INDUTECH_"))},
        "SAMPLE_JOURNAL": str(journal),
        "SAMPLE_HEALTH__PORT": "0",
        "SAMPLE_HEALTH__HOST": "127.0.0.1",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sample_worker"],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, journal


def wait_for_line(journal: Path, line: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if journal.exists() and line in journal.read_text().splitlines():
            return
        time.sleep(0.02)
    pytest.fail(f"{line!r} never appeared in {journal}")


class TestGracefulShutdown:
    def test_sigterm_drains_the_unit_in_hand_and_exits_zero(self, tmp_path: Path) -> None:
        """SIGTERM mid-unit: the unit finishes, shutdown runs, exit code 0, within the deadline."""
        process, journal = start_worker(
            tmp_path, SAMPLE_UNIT_OF_WORK_S="1.0", SAMPLE_SHUTDOWN_TIMEOUT_S="5"
        )
        wait_for_line(journal, "started 1")
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
        took = time.monotonic() - sent
        assert process.returncode == 0
        assert took < 5
        assert journal.read_text().splitlines() == [
            "started 1",
            "done 1",
            "shutdown",
            "closed second",  # resources close last-registered first
            "closed first",
        ]
        events = [json.loads(line)["event"] for line in stdout.splitlines() if line.startswith("{")]
        assert events.index("signal_received") < events.index("worker_draining")
        assert events[-1] == "worker_stopped"

    def test_drain_deadline_cancels_and_reports(self, tmp_path: Path) -> None:
        """A unit longer than the drain share of the budget is cancelled; exit code 3."""
        process, journal = start_worker(
            tmp_path, SAMPLE_UNIT_OF_WORK_S="30", SAMPLE_SHUTDOWN_TIMEOUT_S="1"
        )
        wait_for_line(journal, "started 1")
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
        assert process.returncode == EXIT_DRAIN_TIMEOUT
        # 0.75 s of drain (the budget less the quarter kept for closing), then the close
        assert 0.7 < time.monotonic() - sent < 5
        assert "done 1" not in journal.read_text()
        assert "shutdown" in journal.read_text()
        assert "drain_deadline_exceeded" in stdout

    def test_one_budget_covers_drain_shutdown_and_resources(self, tmp_path: Path) -> None:
        """Drain, shutdown hook and resources share one budget: the stop ends near it, not at 3x."""
        process, journal = start_worker(
            tmp_path,
            SAMPLE_UNIT_OF_WORK_S="30",
            SAMPLE_SHUTDOWN_S="30",
            SAMPLE_RESOURCE_CLOSE_S="30",
            SAMPLE_SHUTDOWN_TIMEOUT_S="2",
        )
        wait_for_line(journal, "started 1")
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=15)
        took = time.monotonic() - sent
        assert process.returncode == EXIT_DRAIN_TIMEOUT
        # the budget plus the interpreter's exit; before, each step had the full 2 s
        assert took < 3.5
        events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        timed_out = [e["step"] for e in events if e["event"] == "cleanup_deadline_exceeded"]
        assert timed_out == ["shutdown", "second", "first"]

    def test_second_signal_forces_exit(self, tmp_path: Path) -> None:
        """A second SIGTERM does not wait for the deadline."""
        process, journal = start_worker(
            tmp_path, SAMPLE_UNIT_OF_WORK_S="30", SAMPLE_SHUTDOWN_TIMEOUT_S="20"
        )
        wait_for_line(journal, "started 1")
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
        assert process.returncode == EXIT_DRAIN_TIMEOUT
        assert "forced_exit" in stdout


class TestStartErrors:
    def test_invalid_config_fails_at_start_naming_the_field(self, tmp_path: Path) -> None:
        """A bad value exits 2 before any work, naming the variable and what it expects."""
        process, journal = start_worker(tmp_path, SAMPLE_UNIT_OF_WORK_S="-3")
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 2
        assert "SAMPLE_UNIT_OF_WORK_S" in stderr
        assert "greater than 0" in stderr
        assert not journal.exists()

    def test_help_lists_settings(self) -> None:
        """--help documents every setting with its env variable."""
        result = subprocess.run(
            [sys.executable, "-m", "tests.support.sample_worker", "--help"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert "SAMPLE_JOURNAL (required)" in result.stdout
        assert "SAMPLE_SHUTDOWN_TIMEOUT_S (default 30.0)" in result.stdout

    async def test_config_error_found_at_start_exits_2_without_traceback(self) -> None:
        """A ConfigError from startup() (e.g. a missing topic) is a configuration failure:
        exit 2, the message logged once, shutdown still run."""

        class Refusing(Worker[WorkerSettings]):
            name = "refusing"
            closed = False

            async def startup(self) -> None:
                raise ConfigError("topic x is missing: run the create command")

            async def main_loop(self) -> None:
                raise AssertionError("never reached")

            async def shutdown(self) -> None:
                Refusing.closed = True

        worker = Refusing(WorkerSettings(health={"host": "127.0.0.1", "port": 0}))
        with capture_logs() as logs:
            assert await worker.serve(install_signal_handlers=False) == EXIT_CONFIG
        (event,) = [e for e in logs if e["event"] == "worker_config_invalid"]
        assert event["error"] == "topic x is missing: run the create command"
        assert "exc_info" not in event
        assert not [e for e in logs if e["event"] == "worker_failed"]
        assert Refusing.closed


class TestResources:
    """Resources registered in startup are closed by the worker, each on its own."""

    async def test_failed_close_is_logged_and_the_rest_still_close(self, tmp_path: Path) -> None:
        closed: list[str] = []

        @asynccontextmanager
        async def client(name: str) -> AsyncIterator[str]:
            yield name
            closed.append(name)

        class FailingCloseWorker(SampleWorker):
            async def startup(self) -> None:
                await super().startup()
                assert await self.enter("pool", client("pool")) == "pool"
                self.add_closer("broken", self._broken_close)
                self.request_exit()

            async def _broken_close(self) -> None:
                raise ConnectionResetError("peer went away")

        settings = SampleSettings(
            journal=tmp_path / "journal.txt",
            unit_of_work_s=0.01,
            health={"host": "127.0.0.1", "port": 0},
        )
        with structlog.testing.capture_logs() as logs:
            exit_code = await FailingCloseWorker(settings).serve(install_signal_handlers=False)
        assert exit_code == 0
        assert closed == ["pool"]
        failures = [e for e in logs if e["event"] == "cleanup_failed"]
        assert [e["step"] for e in failures] == ["broken"]
        lines = (tmp_path / "journal.txt").read_text().splitlines()
        assert lines[-2:] == ["closed second", "closed first"]

    async def test_adopted_resource_is_pinged_and_closed(self, tmp_path: Path) -> None:
        """``adopt`` puts the resource's ping on /readyz and closes it at stop."""

        class Journal:
            name = "journal-dir"

            def __init__(self, directory: Path) -> None:
                self.directory = directory
                self.closed = False

            async def ping(self) -> None:
                if not self.directory.is_dir():
                    raise FileNotFoundError(self.directory)

            async def close(self) -> None:
                self.closed = True

        journal = Journal(tmp_path / "missing")
        assert isinstance(journal, Resource)
        settings = SampleSettings(
            journal=tmp_path / "journal.txt",
            health={"host": "127.0.0.1", "port": 0},
        )
        worker = SampleWorker(settings)
        assert worker.adopt(journal) is journal
        checks = {r.name: r for r in await worker.health.check()}
        assert checks["journal-dir"].ok is False
        assert "FileNotFoundError" in (checks["journal-dir"].error or "")
        journal.directory.mkdir()
        assert {r.name: r.ok for r in await worker.health.check()}["journal-dir"] is True
        worker.request_exit()
        assert await worker.serve(install_signal_handlers=False) == 0
        assert journal.closed
