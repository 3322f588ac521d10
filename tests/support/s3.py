"""S3 objects of one test, bench or demo run, under its own key prefix."""

from __future__ import annotations

from indutech_common.s3 import create_s3_client
from indutech_common.settings import S3Settings


async def list_keys(s3_settings: S3Settings, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    async with create_s3_client(s3_settings) as s3:
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(keys)


async def delete_prefix(s3_settings: S3Settings, bucket: str, prefix: str) -> None:
    """Delete every object under ``prefix`` (a run's own; never an empty prefix)."""
    if not prefix.strip("/"):
        raise ValueError("refusing to delete a whole bucket: give the run's own prefix")
    async with create_s3_client(s3_settings) as s3:
        for key in await list_keys(s3_settings, bucket, prefix):
            await s3.delete_object(Bucket=bucket, Key=key)
