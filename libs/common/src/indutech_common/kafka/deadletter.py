"""The dead-letter writer: a bad record is kept, with why it was refused."""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaProducer

from indutech_common.metrics import WorkerMetrics
from indutech_common.schemas.topics import Topics

_log = structlog.get_logger(__name__)
MAX_ERROR_HEADER_BYTES = 4096


class DeadLetterWriter:
    """Sends the original bytes to ``iot.dead-letter.v1`` with headers ``error``, ``source``,
    ``offset`` (and any extras), so an operator can see, fix and replay.

    It uses the caller's producer: with a transactional producer inside an open
    transaction, the dead letter commits atomically with the rest of the batch.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        *,
        metrics: WorkerMetrics | None = None,
        topic: str = Topics.DEAD_LETTER,
    ) -> None:
        self._producer = producer
        self._metrics = metrics
        self.topic = topic

    async def send(
        self,
        value: bytes,
        *,
        reason: str,
        error: str,
        source: str,
        offset: int | str,
        key: bytes | None = None,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Queue a dead letter: ``reason`` is a stable kind (for metrics), ``error`` the detail."""
        headers = [
            ("error", error.encode()[:MAX_ERROR_HEADER_BYTES]),
            ("reason", reason.encode()),
            ("source", source.encode()),
            ("offset", str(offset).encode()),
            *extra_headers,
        ]
        await self._producer.send(
            self.topic, value=value, key=key or source.encode(), headers=headers
        )
        if self._metrics is not None:
            self._metrics.dead_lettered.labels(self._metrics.worker, reason).inc()
        _log.warning(
            "dead_lettered", reason=reason, error=error[:500], source=source, offset=offset
        )

    async def flush(self) -> None:
        """Wait until every dead letter queued so far is delivered: call it before committing
        an offset past them, when the producer is not transactional."""
        await self._producer.flush()
