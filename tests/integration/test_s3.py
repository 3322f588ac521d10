"""S3 through the common client: every object is encrypted, and unencrypted writes cannot happen."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from indutech_common.s3 import SseRequiredError, create_s3_client, ping_bucket
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
