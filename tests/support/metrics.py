"""A worker's metric as ``/metrics`` shows it (every metric carries the ``worker`` label)."""

from __future__ import annotations

from typing import Any

from indutech_common.lifecycle import Worker


def sample(worker: Worker[Any], name: str, **labels: str) -> float | None:
    """The value of ``name`` with ``labels`` and the worker's own ``worker`` label; None when
    that series was never set."""
    return worker.metrics.registry.get_sample_value(name, {"worker": worker.name, **labels})
