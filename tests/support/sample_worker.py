"""A minimal worker on the common lifecycle, run as a subprocess by the lifecycle tests.

Each unit of work appends ``started N`` then ``done N`` to a journal file, so a
test can tell whether the unit in hand when SIGTERM arrived was finished.
"""

from __future__ import annotations

import asyncio
import sys
from argparse import Namespace
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from indutech_common.cli import worker_main
from indutech_common.lifecycle import Worker
from indutech_common.settings import WorkerSettings


class SampleSettings(WorkerSettings):
    service_name: ClassVar[str] = "sample-worker"
    model_config = SettingsConfigDict(env_prefix="SAMPLE_")

    journal: Path = Field(description="file that records each unit of work")
    unit_of_work_s: float = Field(default=0.5, gt=0, description="how long one unit takes")
    shutdown_s: float = Field(default=0, ge=0, description="how long the shutdown hook takes")
    resource_close_s: float = Field(
        default=0, ge=0, description="how long each of two registered resources takes to close"
    )


class SampleWorker(Worker[SampleSettings]):
    name = "sample-worker"

    async def startup(self) -> None:
        self.units = 0
        self.health.register_ping("journal", self._ping)
        for name in ("first", "second"):
            self.add_closer(name, self._closer(name))

    def _closer(self, name: str) -> Callable[[], Awaitable[None]]:
        async def close() -> None:
            await asyncio.sleep(self.settings.resource_close_s)
            self._write(f"closed {name}")

        return close

    async def _ping(self) -> None:
        if not self.settings.journal.parent.is_dir():
            raise FileNotFoundError(self.settings.journal.parent)

    async def main_loop(self) -> None:
        while not self.should_exit.is_set():
            self.units += 1
            self._write(f"started {self.units}")
            await asyncio.sleep(self.settings.unit_of_work_s)  # the unit is never interrupted
            self._write(f"done {self.units}")

    async def shutdown(self) -> None:
        await asyncio.sleep(self.settings.shutdown_s)
        self._write("shutdown")

    def _write(self, line: str) -> None:
        with self.settings.journal.open("a") as journal:
            journal.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    def run(settings: SampleSettings, _args: Namespace) -> int:
        return SampleWorker(settings).run()

    return worker_main(
        prog="sample-worker",
        description="A worker that does timed units of work (lifecycle tests).",
        settings_cls=SampleSettings,
        run=run,
        argv=argv,
    )


if __name__ == "__main__":
    sys.exit(main())
