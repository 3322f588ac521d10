"""One lifecycle for every worker: startup → main loop → graceful shutdown.

Modelled on uvicorn's ``Server`` and arq's ``Worker``: the first SIGTERM or
SIGINT asks the main loop to stop taking work and drain; a second signal
cancels at once. ``run()`` is for production (uvloop), ``serve()`` is the async
entry for tests.

One budget, ``shutdown_timeout_s``, covers the whole stop: the drain of the
main loop, ``shutdown()``, every resource registered with ``add_closer`` /
``enter`` (closed last-in first-out, one failure logged and the rest still
closed) and the health server. Kubernetes' grace period must exceed it; before
this, each of the three steps had the full timeout, three times what the
setting said.
"""

from __future__ import annotations

import asyncio
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Generic, TypeVar

import structlog
import uvloop

from indutech_common.cli import EXIT_CONFIG
from indutech_common.errors import ConfigError
from indutech_common.health import HealthServer
from indutech_common.logging import configure_logging, register_secrets_of
from indutech_common.metrics import WorkerMetrics
from indutech_common.protocols import Resource
from indutech_common.settings import WorkerSettings

SettingsT = TypeVar("SettingsT", bound=WorkerSettings)
ResourceT = TypeVar("ResourceT")
ResourceProtocolT = TypeVar("ResourceProtocolT", bound=Resource)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_DRAIN_TIMEOUT = 3

_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Of the stop budget, the part kept for closing (shutdown, resources, health
# server) when the drain of the main loop runs out: a quarter, at most 5 s.
_CLOSE_SHARE = 0.25
_CLOSE_RESERVE_MAX_S = 5.0


class Worker(ABC, Generic[SettingsT]):
    """Subclass, set ``name``, and implement ``startup`` and ``main_loop``.

    ``main_loop`` runs until it returns or ``self.should_exit`` is set; it must
    check ``should_exit`` between units of work (a batch, a file, a chunk) and
    return once the unit in hand is durably done. What ``startup`` opens is
    registered with ``add_closer`` or ``enter`` and closed by the worker, even
    when startup failed half-way; ``shutdown`` is for work that must happen
    before the resources close (flush a last batch).
    """

    name: ClassVar[str] = "worker"

    def __init__(self, settings: SettingsT) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics(self.name)
        self.health = HealthServer(settings.health, self.metrics)
        self.log = structlog.get_logger(self.name)
        self.should_exit = asyncio.Event()
        self._force_exit = False
        self._main_task: asyncio.Task[None] | None = None
        self._closers: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._stop_deadline: float | None = None
        register_secrets_of(settings)

    @abstractmethod
    async def startup(self) -> None:
        """Open clients and register their health pings."""

    @abstractmethod
    async def main_loop(self) -> None:
        """Do the work until ``should_exit`` is set."""

    async def shutdown(self) -> None:
        """Work before the resources close (e.g. flush). Called once, after the main loop."""

    def add_closer(self, name: str, close: Callable[[], Awaitable[object]]) -> None:
        """Close a resource at stop, after ``shutdown``, last-registered first."""
        self._closers.append((name, close))

    def adopt(self, resource: ResourceProtocolT) -> ResourceProtocolT:
        """Serve the resource's ping on ``/readyz`` and close it at stop; returns it."""
        self.health.register_ping(resource.name, resource.ping)
        self.add_closer(resource.name, resource.close)
        return resource

    async def enter(self, name: str, resource: AbstractAsyncContextManager[ResourceT]) -> ResourceT:
        """Enter an async context manager now and exit it at stop (see ``add_closer``)."""
        value = await resource.__aenter__()
        self.add_closer(name, lambda: resource.__aexit__(None, None, None))
        return value

    def stop_budget_left(self) -> float:
        """Seconds left of ``shutdown_timeout_s`` since the stop began (the whole budget before)."""
        if self._stop_deadline is None:
            return self.settings.shutdown_timeout_s
        return max(0.0, self._stop_deadline - time.monotonic())

    def _start_stop_clock(self) -> None:
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.settings.shutdown_timeout_s

    def request_exit(self) -> None:
        """Ask for a graceful drain (what SIGTERM does)."""
        self.should_exit.set()

    async def sleep_or_exit(self, seconds: float) -> bool:
        """Sleep, waking early on an exit request; returns True when asked to exit."""
        try:
            await asyncio.wait_for(self.should_exit.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def serve(self, *, install_signal_handlers: bool = True) -> int:
        """Run the whole lifecycle and return the process exit code."""
        loop = asyncio.get_running_loop()
        restore = self._install_signal_handlers(loop) if install_signal_handlers else None
        exit_code = EXIT_OK
        try:
            await self.health.start()
            self.log.info("worker_starting")
            await self.startup()
            self.health.state.started = True
            self.log.info("worker_started", health_port=self.health.port)
            exit_code = await self._run_main_loop()
        except ConfigError as exc:
            # Found at start (e.g. a topic missing or mis-configured): no traceback, and
            # the configuration exit code, as for bad settings.
            self.log.error("worker_config_invalid", error=str(exc))  # noqa: TRY400 - no traceback: the message is the whole story
            exit_code = EXIT_CONFIG
        except Exception:
            self.log.exception("worker_failed")
            exit_code = EXIT_FAILED
        finally:
            self.health.state.stopping = True
            await self._close()
            if restore is not None:
                restore()
        self.log.info("worker_stopped", exit_code=exit_code)
        return exit_code

    async def _run_main_loop(self) -> int:
        self._main_task = asyncio.create_task(self.main_loop(), name=f"{self.name}-main-loop")
        exit_requested = asyncio.create_task(self.should_exit.wait())
        done, _ = await asyncio.wait(
            {self._main_task, exit_requested}, return_when=asyncio.FIRST_COMPLETED
        )
        exit_requested.cancel()
        if self._main_task not in done:
            self._start_stop_clock()
            budget = self.settings.shutdown_timeout_s
            reserve = min(_CLOSE_RESERVE_MAX_S, budget * _CLOSE_SHARE)
            deadline = max(0.0, self.stop_budget_left() - reserve)
            self.log.info("worker_draining", deadline_s=round(deadline, 3), budget_s=budget)
            self.health.state.stopping = True
            try:
                await asyncio.wait_for(asyncio.shield(self._main_task), timeout=deadline)
            except TimeoutError:
                self.log.warning("drain_deadline_exceeded", deadline_s=round(deadline, 3))
                await _cancel(self._main_task)
                return EXIT_DRAIN_TIMEOUT
            except asyncio.CancelledError:
                if self._force_exit:
                    self.log.warning("forced_exit")
                    return EXIT_DRAIN_TIMEOUT
                raise
        self._main_task.result()  # re-raise a main-loop failure
        return EXIT_OK

    async def _close(self) -> None:
        self._start_stop_clock()
        # Each step is bounded on its own (not one AsyncExitStack under one timeout:
        # a cancelled exit stack goes on to the next callback and outlives its budget).
        steps = [("shutdown", self.shutdown), *reversed(self._closers)]
        self._closers.clear()
        steps.append(("health_server", self.health.stop))
        for step, closer in steps:
            try:
                # The health server gets a moment even when the budget is spent:
                # stopping it only closes a local socket.
                left = self.stop_budget_left() if step != "health_server" else 1.0
                await asyncio.wait_for(closer(), timeout=max(left, 0.001))
            except TimeoutError:
                self.log.warning("cleanup_deadline_exceeded", step=step)
            except Exception:  # a failed cleanup is logged and the rest still closes
                self.log.exception("cleanup_failed", step=step)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        previous = {sig: signal.getsignal(sig) for sig in _HANDLED_SIGNALS}
        for sig in _HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)

        def restore() -> None:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)

        return restore

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.should_exit.is_set():
            self.log.warning("second_signal_forcing_exit", signal=sig.name)
            self._force_exit = True
            if self._main_task is not None:
                self._main_task.cancel()
            return
        self.log.info("signal_received", signal=sig.name)
        self.should_exit.set()

    def run(self) -> int:
        """Production entry: configure logging, run under uvloop, return the exit code."""
        configure_logging(
            level=self.settings.logging.level, fmt=self.settings.logging.format, service=self.name
        )
        return uvloop.run(self.serve())


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        structlog.get_logger(__name__).exception("task_failed_during_cancel")
