"""An S3 client that cannot write an object without server-side encryption.

The guarantee lives in botocore's event hooks of the client itself, not in a
wrapper one could step around: every PutObject, CreateMultipartUpload and
CopyObject gets the configured SSE when the caller gave none, an SSE value
that is not encryption is refused before anything is sent, and a response
that does not confirm SSE raises (PutObject and UploadPart: the responses that
both AWS and MinIO confirm; MinIO leaves the confirmation out of
CreateMultipartUpload, CompleteMultipartUpload and CopyObject).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, SecretStr

from indutech_common.errors import IndutechError
from indutech_common.settings import S3Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

_log = structlog.get_logger(__name__)

MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB  # S3's smallest part (all but the last)
DEFAULT_PART_BYTES = 16 * MIB
WRITE_OPERATIONS = ("PutObject", "CreateMultipartUpload", "CopyObject")
CONFIRMED_OPERATIONS = ("PutObject", "UploadPart")
ENCRYPTIONS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})


class S3Error(IndutechError):
    """Base of the S3 errors raised by the common library."""


class SseRequiredError(S3Error):
    """A write asked for no (or an unknown) server-side encryption."""


class SseNotAppliedError(S3Error):
    """The server stored an object without confirming server-side encryption."""


class SsePolicy:
    """Fills in and checks the SSE parameters of every object write."""

    def __init__(self, settings: S3Settings) -> None:
        self.algorithm = settings.sse
        self.kms_key_id = settings.kms_key_id

    def apply(self, params: dict[str, Any], operation: str) -> None:
        requested = params.get("ServerSideEncryption")
        if requested is None:
            params["ServerSideEncryption"] = self.algorithm
            if self.algorithm == "aws:kms" and self.kms_key_id:
                params.setdefault("SSEKMSKeyId", self.kms_key_id)
        elif requested not in ENCRYPTIONS:
            raise SseRequiredError(
                f"{operation} with ServerSideEncryption={requested!r} refused: every object "
                f"must be encrypted with one of {sorted(ENCRYPTIONS)}; leave it unset to use "
                f"the configured {self.algorithm}."
            )

    def before_parameter_build(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.apply(params, model.name)

    def after_call(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if "Error" in parsed:
            return
        if parsed.get("ServerSideEncryption") not in ENCRYPTIONS:
            raise SseNotAppliedError(
                f"{model.name} was answered without a ServerSideEncryption confirmation; the "
                "S3 server may not support SSE (MinIO needs a KMS key configured). Fix the "
                "server before writing more data."
            )


def install_sse_policy(client: Any, settings: S3Settings) -> SsePolicy:
    policy = SsePolicy(settings)
    for operation in WRITE_OPERATIONS:
        client.meta.events.register(
            f"before-parameter-build.s3.{operation}", policy.before_parameter_build
        )
    for operation in CONFIRMED_OPERATIONS:
        client.meta.events.register(f"after-call.s3.{operation}", policy.after_call)
    return policy


@asynccontextmanager
async def create_s3_client(settings: S3Settings) -> AsyncIterator[S3Client]:
    """An aiobotocore S3 client over verified HTTPS with the SSE policy installed."""
    session = get_session()
    config = AioConfig(
        max_pool_connections=settings.max_pool_connections,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        connect_timeout=5,
        read_timeout=60,
    )
    async with session.create_client(
        "s3",
        region_name=settings.region,
        endpoint_url=settings.endpoint_url,
        verify=str(settings.ca_file) if settings.ca_file else True,
        config=config,
        # None falls back to the default chain: the pod's IAM role (IRSA) in production.
        aws_access_key_id=_reveal(settings.access_key_id),
        aws_secret_access_key=_reveal(settings.secret_access_key),
    ) as client:
        install_sse_policy(client, settings)
        _log.debug("s3_client_created", endpoint=settings.endpoint_url or "aws", sse=settings.sse)
        yield client


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


async def ping_bucket(client: S3Client, bucket: str) -> None:
    """Readiness: the bucket exists and our credentials reach it."""
    await client.head_bucket(Bucket=bucket)


async def delete_staged(client: S3Client, bucket: str, keys: list[str]) -> dict[str, str]:
    """Delete staging files after the transaction that used them, best effort: that
    transaction decided the outcome, and a failed delete (rights, an outage) must neither
    fail a committed load nor hide the error of a failed one. What is left is logged
    (``staging_cleanup_failed``) for the lifecycle rule on the staging prefix
    (docs/deployment.md) and returned, ``{key: error}``."""
    left: dict[str, str] = {}
    for key in keys:
        try:
            await client.delete_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError, OSError) as exc:
            left[key] = f"{type(exc).__name__}: {exc}"
    if left:
        _log.warning(
            "staging_cleanup_failed",
            bucket=bucket,
            keys=list(left),
            error=next(iter(left.values())),
            then="the load stands as its transaction ended; the staging prefix's lifecycle "
            "rule removes these files (or delete them); check the worker's s3:DeleteObject "
            "right on the prefix",
        )
    return left


def _read_part(path: Path, start: int, size: int) -> bytes:
    with path.open("rb") as file:
        file.seek(start)
        return file.read(size)


async def upload_multipart(
    client: S3Client,
    *,
    bucket: str,
    key: str,
    body: bytes | Path,
    part_bytes: int = DEFAULT_PART_BYTES,
    checksum_sha256: bool = False,
    **create_args: Any,
) -> int:
    """Upload ``body`` (bytes, or a file read one part at a time) as an S3 multipart upload.

    ``create_args`` go to CreateMultipartUpload (ContentType, Metadata, …); the SSE policy of
    the client encrypts the object and checks every UploadPart's confirmation. With
    ``checksum_sha256`` each part carries its SHA-256, which S3 verifies on arrival (the object
    then has a composite checksum, not the SHA-256 of the whole body). Any failure, or a
    cancellation, aborts the upload, so no parts are left behind to bill or to be completed
    later. Returns the number of parts.
    """
    if part_bytes < MIN_PART_BYTES:
        raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES} (S3's smallest part)")
    size = (await asyncio.to_thread(body.stat)).st_size if isinstance(body, Path) else len(body)
    if checksum_sha256:
        create_args["ChecksumAlgorithm"] = "SHA256"
    created = await client.create_multipart_upload(Bucket=bucket, Key=key, **create_args)
    upload_id = created["UploadId"]
    parts: list[dict[str, Any]] = []
    try:
        for number, start in enumerate(range(0, max(size, 1), part_bytes), start=1):
            if isinstance(body, Path):
                data = await asyncio.to_thread(_read_part, body, start, part_bytes)
            else:
                data = body[start : start + part_bytes]
            extra: dict[str, str] = {}
            if checksum_sha256:
                extra["ChecksumSHA256"] = base64.b64encode(hashlib.sha256(data).digest()).decode()
            part = await client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                **extra,  # type: ignore[arg-type]
            )
            parts.append({"ETag": part["ETag"], "PartNumber": number, **extra})
        await client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )
    except BaseException:
        try:
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # S3 may be down; a lifecycle rule reaps orphans
            _log.warning("multipart_abort_failed", key=key, error=type(exc).__name__)
        raise
    return len(parts)


JSON_CONTENT_TYPE = "application/json"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PRECONDITION_STATUSES = frozenset({409, 412})

ModelT = TypeVar("ModelT", bound=BaseModel)


def is_missing(exc: BaseException) -> bool:
    """True for S3's answers that mean "no such object" (the codes differ by call and server)."""
    if not isinstance(exc, ClientError):
        return False
    return exc.response.get("Error", {}).get("Code", "") in _MISSING_CODES


def sha256_checksum(data: bytes) -> str:
    """The ``ChecksumSHA256`` of a body: S3 recomputes it and refuses a body that differs."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class JsonObjectStore:
    """Small JSON documents in one bucket: the state, plans, manifests and intents of workers.

    ``get`` returns None for a missing object (any other error raises), ``put`` sends a
    SHA-256 the server verifies and, with ``create_only``, never overwrites (an existing
    object wins and ``put`` returns False: two writers of the same key cannot both think
    they wrote it). SSE comes from the client's policy like every write.
    """

    def __init__(self, client: S3Client, *, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def get_bytes(self, key: str) -> bytes | None:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        async with response["Body"] as body:
            return await body.read()

    async def get(self, key: str, model: type[ModelT]) -> ModelT | None:
        raw = await self.get_bytes(key)
        return model.model_validate_json(raw) if raw is not None else None

    async def put(
        self, key: str, document: BaseModel | bytes, *, create_only: bool = False
    ) -> bool:
        """Write the document; False when ``create_only`` and the key already exists."""
        data = document if isinstance(document, bytes) else document.model_dump_json().encode()
        conditional: dict[str, str] = {"IfNoneMatch": "*"} if create_only else {}
        try:
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=JSON_CONTENT_TYPE,
                ChecksumSHA256=sha256_checksum(data),
                **conditional,  # type: ignore[arg-type]
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if create_only and status in _PRECONDITION_STATUSES:
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def ping(self) -> None:
        """Readiness: the bucket exists and our credentials reach it."""
        await ping_bucket(self.client, self.bucket)

    async def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys
