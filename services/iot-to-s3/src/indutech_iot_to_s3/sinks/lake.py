"""The lake sink: Parquet objects and the write-ahead intents that make them exactly-once.

Every S3 call goes through ``S3Calls.run``: transient failures (no answer,
5xx, throttling) are retried with backoff and jitter for as long as it takes,
so an S3 outage means waiting, never skipping and never committing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import structlog
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

from indutech_common.metrics import WorkerMetrics
from indutech_common.retry import Backoff, retry_async
from indutech_common.s3 import PARQUET_CONTENT_TYPE, JsonObjectStore, upload_multipart
from indutech_iot_to_s3.errors import IntentConflictError, S3TransientError
from indutech_iot_to_s3.segments import PlannedObject

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

T = TypeVar("T")
_log = structlog.get_logger(__name__)

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "XMinioServerNotInitialized",
    }
)
HTTP_SERVER_ERROR = 500


def is_transient(exc: BaseException) -> bool:
    """No answer, a 5xx, or throttling: worth waiting for."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= HTTP_SERVER_ERROR or error.get("Code") in _TRANSIENT_CODES
    return isinstance(
        exc,
        EndpointConnectionError
        | ConnectionClosedError
        | ReadTimeoutError
        | HTTPClientError
        | aiohttp.ClientError
        | OSError
        | TimeoutError,
    )


class S3Calls:
    """Retries transient S3 failures forever (backoff capped), counting each in the metrics."""

    def __init__(self, metrics: WorkerMetrics, *, backoff_max_s: float) -> None:
        self._metrics = metrics
        self._backoff = Backoff(initial_s=0.2, max_s=backoff_max_s)

    async def run(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        async def attempt() -> T:
            try:
                return await operation()
            except Exception as exc:
                if is_transient(exc):
                    self._metrics.error("s3_unavailable")
                    raise S3TransientError(f"{type(exc).__name__}: {exc}") from exc
                raise

        return await retry_async(
            attempt, what=what, retry_on=(S3TransientError,), backoff=self._backoff
        )


@dataclass(frozen=True)
class Intent:
    """What a segment will write, recorded before the first upload."""

    topic: str
    partition: int
    start: int
    end: int
    objects: tuple[PlannedObject, ...]

    def to_json(self) -> bytes:
        body = {
            "version": 1,
            "topic": self.topic,
            "partition": self.partition,
            "start_offset": self.start,
            "end_offset": self.end,
            "objects": [
                {**asdict(o), "hour": o.hour.isoformat().replace("+00:00", "Z")}
                for o in self.objects
            ],
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Intent:
        from datetime import datetime  # noqa: PLC0415 - keeps the module header short

        body = json.loads(raw)
        return cls(
            topic=body["topic"],
            partition=body["partition"],
            start=body["start_offset"],
            end=body["end_offset"],
            objects=tuple(
                PlannedObject(
                    key=o["key"],
                    hour=datetime.fromisoformat(o["hour"]),
                    first_offset=o["first_offset"],
                    last_offset=o["last_offset"],
                    records=o["records"],
                )
                for o in body["objects"]
            ),
        )

    def keys(self) -> list[str]:
        return [o.key for o in self.objects]


class IntentJournal:
    """One small JSON object per in-flight segment, keyed by the segment's start offset.

    Kept in a ``JsonObjectStore`` (SHA-256 checked by the server). Created only when
    absent (``If-None-Match: *``) so two owners of a partition can never record
    different plans for the same start offset; deleted after the commit. An intent
    that outlived its commit (a kill between the commit and the delete, or a failed
    delete) ends before the committed offset: ``pending`` deletes it, so a
    partition's intents never pile up and each assignment reads at most a few.
    """

    def __init__(self, client: S3Client, calls: S3Calls, *, bucket: str, prefix: str) -> None:
        self.store = JsonObjectStore(client, bucket=bucket)
        self._calls = calls
        self.bucket = bucket
        self.prefix = f"{prefix}_state/iot-to-s3/intents/"

    def _dir(self, topic: str, partition: int) -> str:
        return f"{self.prefix}{topic}/{partition:05d}/"

    def key(self, topic: str, partition: int, start: int) -> str:
        return f"{self._dir(topic, partition)}{start:020d}.json"

    async def write(self, intent: Intent) -> None:
        key = self.key(intent.topic, intent.partition, intent.start)
        body = intent.to_json()

        async def put() -> None:
            if await self.store.put(key, body, create_only=True):
                return
            # Our own earlier attempt may have landed before its answer was lost.
            existing = await self._get(key)
            if existing is None:  # the write that won is not visible yet (409): try again
                raise S3TransientError(f"{self.store.url(key)} is being written concurrently")
            if existing != intent:
                raise IntentConflictError(
                    f"{self.store.url(key)} already holds a different plan for "
                    f"{intent.topic}[{intent.partition}] from offset {intent.start}: "
                    "another consumer owns this partition"
                )

        await self._calls.run(f"s3 put intent {key}", put)

    async def _get(self, key: str) -> Intent | None:
        raw = await self.store.get_bytes(key)
        return None if raw is None else Intent.from_json(raw)

    async def pending(self, topic: str, partition: int, committed: int | None) -> Intent | None:
        """The intent a previous owner recorded but did not commit, if any; the intents whose
        offsets are all committed (``end < committed``) are deleted on the way."""

        async def find() -> Intent | None:
            found: list[Intent] = []
            for key in sorted(await self.store.list_keys(self._dir(topic, partition))):
                intent = await self._get(key)
                if intent is None:
                    continue  # deleted since the listing (by its own writer, after the commit)
                if committed is None or intent.end >= committed:
                    found.append(intent)
                else:
                    # Committed, so every object it planned was uploaded: it is done.
                    await self.store.delete(key)
                    _log.info(
                        "stale_intent_deleted",
                        topic=topic,
                        partition=partition,
                        start=intent.start,
                        end=intent.end,
                        committed=committed,
                    )
            if len(found) > 1:
                _log.warning(
                    "several_pending_intents",
                    topic=topic,
                    partition=partition,
                    starts=[i.start for i in found],
                )
            return found[0] if found else None

        return await self._calls.run(f"s3 list intents {topic}[{partition}]", find)

    async def delete(self, intent: Intent) -> None:
        """Best effort after the commit: a leftover intent ends before the committed offset."""
        key = self.key(intent.topic, intent.partition, intent.start)
        try:
            await self.store.delete(key)
        except Exception as exc:  # harmless: pending() skips intents that end before the commit
            _log.warning("intent_delete_failed", key=key, error=f"{type(exc).__name__}: {exc}")


class LakeWriter:
    """Uploads one Parquet object: a single PUT, or a multipart upload for large files."""

    def __init__(
        self,
        client: S3Client,
        calls: S3Calls,
        *,
        bucket: str,
        multipart_threshold: int,
        part_bytes: int,
    ) -> None:
        self._s3 = client
        self._calls = calls
        self.bucket = bucket
        self._threshold = multipart_threshold
        self._part_bytes = part_bytes

    async def upload(self, planned: PlannedObject, body: bytes, metadata: dict[str, str]) -> None:
        if len(body) >= self._threshold:
            await self._calls.run(
                f"s3 multipart {planned.key}", lambda: self._multipart(planned.key, body, metadata)
            )
        else:
            await self._calls.run(
                f"s3 put {planned.key}",
                lambda: self._s3.put_object(
                    Bucket=self.bucket,
                    Key=planned.key,
                    Body=body,
                    ContentType=PARQUET_CONTENT_TYPE,
                    Metadata=metadata,
                ),
            )

    async def _multipart(self, key: str, body: bytes, metadata: dict[str, str]) -> None:
        await upload_multipart(
            self._s3,
            bucket=self.bucket,
            key=key,
            body=body,
            part_bytes=self._part_bytes,
            ContentType=PARQUET_CONTENT_TYPE,
            Metadata=metadata,
        )
