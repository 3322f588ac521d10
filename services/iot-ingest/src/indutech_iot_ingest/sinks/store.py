"""The dead-letter store: an over-long line kept whole in S3, pointed at by its dead letter.

A dead-letter message carries at most ``dead_letter_keep_bytes`` of an
over-long line (Kafka's message limit); the whole line goes to
``s3://{lake}/{prefix}{fingerprint}/{offset:020d}`` (SSE through
``indutech_common.s3``) and the message gets the headers ``object`` (its URL),
``object_bytes`` and ``object_sha256``. The key depends only on the file's
fingerprint and the line's byte offset, so a transaction replayed after a
crash writes the same object again (an overwrite with the same bytes), and
the upload finishes before the transaction holding its pointer commits: a
committed pointer always names a complete object. An object whose
transaction never commits is overwritten by the replay, or, if the file is
gone before it, left for the bucket's lifecycle rule.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from indutech_common.s3 import MIN_PART_BYTES

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

_log = structlog.get_logger(__name__)
PART_BYTES = 8 * 1024 * 1024  # one PutObject up to this, a multipart upload beyond


@dataclass(frozen=True)
class StoredLine:
    """Where a line was kept, and what the dead letter says about it."""

    url: str
    size: int
    sha256: str
    truncated: bool

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("object", self.url.encode()),
            ("object_bytes", str(self.size).encode()),
            ("object_sha256", self.sha256.encode()),
        ]
        if self.truncated:
            headers.append(("object_truncated", b"true"))
        return headers


class DeadLetterStore:
    """Writes lines to deterministic keys under ``prefix`` in ``bucket``."""

    def __init__(
        self,
        client: S3Client,
        *,
        bucket: str,
        prefix: str,
        max_object_bytes: int,
        part_bytes: int = PART_BYTES,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES} (S3's smallest part)")
        self._client = client
        self.bucket = bucket
        self.prefix = prefix
        self.max_object_bytes = max_object_bytes
        self.part_bytes = part_bytes

    def key_of(self, fingerprint: str, offset: int) -> str:
        """The same key for the same line on every replay."""
        return f"{self.prefix}{fingerprint}/{offset:020d}"

    async def keep(self, chunks: Iterator[bytes], *, fingerprint: str, offset: int) -> StoredLine:
        """Upload the bytes of ``chunks`` (read in a thread: they come from the SAN), at most
        ``max_object_bytes`` of them, one part in memory at a time."""
        key = self.key_of(fingerprint, offset)
        digest = hashlib.sha256()
        parts = Parts(chunks, part_bytes=self.part_bytes, limit=self.max_object_bytes)
        first = await asyncio.to_thread(parts.next)
        metadata = {"fingerprint": fingerprint, "offset": str(offset)}
        if parts.exhausted:
            digest.update(first)
            await self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=first,
                ContentType="application/octet-stream",
                Metadata=metadata,
            )
        else:
            await self._multipart(key, first, parts, digest, metadata)
        stored = StoredLine(
            url=f"s3://{self.bucket}/{key}",
            size=parts.taken,
            sha256=digest.hexdigest(),
            truncated=parts.truncated,
        )
        _log.info("dead_letter_stored", object=stored.url, bytes=stored.size)
        return stored

    async def _multipart(
        self,
        key: str,
        first: bytes,
        parts: Parts,
        digest: Any,
        metadata: dict[str, str],
    ) -> None:
        client = self._client
        created = await client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType="application/octet-stream", Metadata=metadata
        )
        upload_id = created["UploadId"]
        done: list[dict[str, Any]] = []
        try:
            data = first
            while data:
                digest.update(data)
                number = len(done) + 1
                part = await client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )
                done.append({"ETag": part["ETag"], "PartNumber": number})
                data = await asyncio.to_thread(parts.next)
            await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},  # type: ignore[typeddict-item]
            )
        except BaseException:
            try:
                await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception as exc:  # S3 may be down; the replay uploads again
                _log.warning("multipart_abort_failed", key=key, error=type(exc).__name__)
            raise


class Parts:
    """Cuts a stream of chunks into parts of ``part_bytes`` (the last one shorter), taking
    at most ``limit`` bytes in all; reads ahead so it knows when a part is the last."""

    def __init__(self, chunks: Iterator[bytes], *, part_bytes: int, limit: int) -> None:
        self._chunks = chunks
        self._part_bytes = part_bytes
        self._limit = limit
        self._pending = b""
        self.taken = 0
        self.exhausted = False  # nothing more will be returned
        self.truncated = False  # the stream had more than ``limit`` bytes

    def next(self) -> bytes:
        """The next part; empty at the end."""
        if self.exhausted:
            return b""
        want = min(self._part_bytes, self._limit - self.taken)
        part = bytearray(self._pending)
        self._pending = b""
        while len(part) <= want:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            part += chunk
        if len(part) > want:
            self._pending = bytes(part[want:])
            del part[want:]
        else:
            self.exhausted = True
        self.taken += len(part)
        if self._pending and self.taken >= self._limit:
            self.truncated = self.exhausted = True
            self._pending = b""
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()  # a generator closes its file now
        return bytes(part)
