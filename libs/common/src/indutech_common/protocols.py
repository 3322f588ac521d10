"""The small surfaces every worker's sources and sinks present (quix-streams' idea).

A worker's ``worker.py`` holds the lifecycle only; what it reads from is a
*source* and what it writes to is a *sink*, each in its service's ``sources/``
or ``sinks/`` package. Both are *resources*: they can say whether their
dependency answers (``ping``, served on ``/readyz``) and they close. The base
``Worker.adopt`` registers both at once, so a client's health check always sits
next to the client (as hynek's svcs does) and nothing opened is left unclosed.

A sink never imports a source: what passes between them is a plain batch type
of the worker (or a contract from ``indutech_common.schemas``).
"""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

BatchT_co = TypeVar("BatchT_co", covariant=True)
BatchT_contra = TypeVar("BatchT_contra", contravariant=True)


@runtime_checkable
class Resource(Protocol):
    """Something the worker opened: a client, a pool, a file watcher."""

    @property
    def name(self) -> str:
        """Short, stable; the ``/readyz`` check and the cleanup log use it."""
        ...

    async def ping(self) -> None:
        """Return when the dependency answers; raise (or hang until timed out) when not."""
        ...

    async def close(self) -> None:
        """Release what was opened; called once, within the worker's stop budget."""
        ...


class Source(Resource, Protocol[BatchT_co]):
    """Where a worker reads: ``read`` returns the next batch (empty when idle)."""

    async def read(self) -> BatchT_co:
        """The next batch; returns an empty batch rather than blocking past a poll interval."""
        ...


class Sink(Resource, Protocol[BatchT_contra]):
    """Where a worker writes: ``write`` returns once the batch is durable."""

    async def write(self, batch: BatchT_contra) -> None:
        """Write the whole batch durably, or raise; a partial write is never reported done."""
        ...
