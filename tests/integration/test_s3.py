"""S3 through the common client: every object is encrypted, and unencrypted writes cannot happen."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import BaseModel

from indutech_common.s3 import (
    MIN_PART_BYTES,
    JsonObjectStore,
    SseRequiredError,
    create_s3_client,
    is_missing,
    ping_bucket,
    upload_multipart,
)
from tests.support.s3 import delete_prefix
from tests.support.stack import StackSettings


class TestS3Client:
    async def test_put_without_sse_argument_is_encrypted(
        self, stack: StackSettings, unique: str
    ) -> None:
        """A plain put_object through the common client lands with SSE (HeadObject shows it)."""
        key = f"tests/{unique}/plain.txt"
        async with create_s3_client(stack.s3) as s3:
            await s3.put_object(Bucket=stack.s3.lake_bucket, Key=key, Body=b"hello")
            head = await s3.head_object(Bucket=stack.s3.lake_bucket, Key=key)
            await s3.delete_object(Bucket=stack.s3.lake_bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"].endswith(str(stack.s3.kms_key_id))

    async def test_explicit_aes256_is_kept(self, stack: StackSettings, unique: str) -> None:
        key = f"tests/{unique}/aes.txt"
        async with create_s3_client(stack.s3) as s3:
            await s3.put_object(
                Bucket=stack.s3.lake_bucket, Key=key, Body=b"x", ServerSideEncryption="AES256"
            )
            head = await s3.head_object(Bucket=stack.s3.lake_bucket, Key=key)
            await s3.delete_object(Bucket=stack.s3.lake_bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256"

    async def test_multipart_upload_is_encrypted(self, stack: StackSettings, unique: str) -> None:
        """CreateMultipartUpload gets SSE too, so large files are covered."""
        key = f"tests/{unique}/multipart.bin"
        bucket = stack.s3.lake_bucket
        async with create_s3_client(stack.s3) as s3:
            upload = await s3.create_multipart_upload(Bucket=bucket, Key=key)
            part = await s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"a" * 1024
            )
            await s3.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
            )
            head = await s3.head_object(Bucket=bucket, Key=key)
            await s3.delete_object(Bucket=bucket, Key=key)
        assert part["ServerSideEncryption"] == "aws:kms"
        assert head["ServerSideEncryption"] == "aws:kms"

    @pytest.mark.parametrize("source", ["bytes", "file"])
    async def test_upload_multipart_sends_parts_encrypted_and_whole(
        self, stack: StackSettings, unique: str, tmp_path: Path, source: str
    ) -> None:
        """upload_multipart: 2 full parts and a short last one, every part checksummed, the
        object byte for byte the body, SSE on it; from bytes or read from a file part by part."""
        key = f"tests/{unique}/multipart-{source}.bin"
        bucket = stack.s3.lake_bucket
        body = bytes(range(256)) * ((2 * MIN_PART_BYTES + 12_345) // 256)
        path = tmp_path / "body.bin"
        path.write_bytes(body)
        async with create_s3_client(stack.s3) as s3:
            parts = await upload_multipart(
                s3,
                bucket=bucket,
                key=key,
                body=path if source == "file" else body,
                part_bytes=MIN_PART_BYTES,
                checksum_sha256=True,
                ContentType="application/octet-stream",
                Metadata={"origin": "test"},
            )
            head = await s3.head_object(Bucket=bucket, Key=key)
            got = await s3.get_object(Bucket=bucket, Key=key)
            async with got["Body"] as stream:
                stored = await stream.read()
            await s3.delete_object(Bucket=bucket, Key=key)
        assert parts == 3
        assert hashlib.sha256(stored).digest() == hashlib.sha256(body).digest()
        assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"].endswith(str(stack.s3.kms_key_id))
        assert head["Metadata"] == {"origin": "test"}

    async def test_upload_multipart_aborts_on_failure(
        self, stack: StackSettings, unique: str
    ) -> None:
        """A part that fails aborts the upload: no object, no parts left behind."""
        key = f"tests/{unique}/aborted.bin"
        bucket = stack.s3.lake_bucket
        async with create_s3_client(stack.s3) as s3:
            real_upload_part = s3.upload_part
            calls = 0

            async def second_part_fails(**kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls == 2:
                    raise ConnectionResetError("the network dropped the second part")
                return await real_upload_part(**kwargs)

            s3.upload_part = second_part_fails  # type: ignore[method-assign]
            with pytest.raises(ConnectionResetError):
                await upload_multipart(
                    s3,
                    bucket=bucket,
                    key=key,
                    body=b"x" * (MIN_PART_BYTES + 1),
                    part_bytes=MIN_PART_BYTES,
                )
            uploads = await s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
            with pytest.raises(ClientError):
                await s3.head_object(Bucket=bucket, Key=key)
        assert calls == 2
        assert not uploads.get("Uploads"), uploads.get("Uploads")

    async def test_upload_multipart_refuses_parts_below_the_s3_minimum(
        self, stack: StackSettings
    ) -> None:
        async with create_s3_client(stack.s3) as s3:
            with pytest.raises(ValueError, match="at least"):
                await upload_multipart(
                    s3, bucket=stack.s3.lake_bucket, key="never", body=b"x", part_bytes=1024
                )

    async def test_unencrypted_put_is_impossible(self, stack: StackSettings, unique: str) -> None:
        """Asking for no encryption is refused before anything reaches the server."""
        key = f"tests/{unique}/refused.txt"
        async with create_s3_client(stack.s3) as s3:
            with pytest.raises(SseRequiredError, match="refused"):
                await s3.put_object(
                    Bucket=stack.s3.lake_bucket,
                    Key=key,
                    Body=b"x",
                    ServerSideEncryption="",  # type: ignore[arg-type]
                )
            with pytest.raises(ClientError) as info:
                await s3.head_object(Bucket=stack.s3.lake_bucket, Key=key)
        assert info.value.response["Error"]["Code"] in ("404", "NoSuchKey")

    async def test_ping_fails_for_a_missing_bucket(self, stack: StackSettings) -> None:
        async with create_s3_client(stack.s3) as s3:
            await ping_bucket(s3, stack.s3.lake_bucket)
            with pytest.raises(ClientError):
                await ping_bucket(s3, "indutech-no-such-bucket")


class Note(BaseModel):
    text: str
    count: int


class TestJsonObjectStore:
    """The JSON document store every worker's state, plans and intents go through."""

    async def test_round_trip_missing_create_only_and_list(
        self, stack: StackSettings, unique: str
    ) -> None:
        prefix = f"tests/{unique}/json/"
        try:
            async with create_s3_client(stack.s3) as s3:
                store = JsonObjectStore(s3, bucket=stack.s3.lake_bucket)
                assert await store.get(f"{prefix}absent.json", Note) is None
                assert await store.put(f"{prefix}a.json", Note(text="first", count=1))
                assert await store.get(f"{prefix}a.json", Note) == Note(text="first", count=1)
                # create_only: the existing document wins, and the caller is told so
                won = await store.put(
                    f"{prefix}a.json", Note(text="second", count=2), create_only=True
                )
                assert won is False
                assert await store.get(f"{prefix}a.json", Note) == Note(text="first", count=1)
                assert await store.put(f"{prefix}b.json", b'{"text": "raw", "count": 3}')
                assert await store.list_keys(prefix) == [f"{prefix}a.json", f"{prefix}b.json"]
                head = await s3.head_object(Bucket=stack.s3.lake_bucket, Key=f"{prefix}b.json")
                assert head["ContentType"] == "application/json"
                assert head["ServerSideEncryption"] == "aws:kms"
                await store.delete(f"{prefix}a.json")
                assert await store.get_bytes(f"{prefix}a.json") is None
        finally:
            await delete_prefix(stack.s3, stack.s3.lake_bucket, prefix)

    async def test_other_errors_are_not_taken_for_missing(self, stack: StackSettings) -> None:
        async with create_s3_client(stack.s3) as s3:
            store = JsonObjectStore(s3, bucket=f"no-such-bucket-{stack.s3.lake_bucket}")
            with pytest.raises(ClientError) as raised:
                await store.get_bytes("anything.json")
        assert raised.value.response["Error"]["Code"] == "NoSuchBucket"
        assert not is_missing(raised.value)
