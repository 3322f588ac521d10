"""The MinIO policies compose's minio-init gives each worker's user (rendered from
deploy/iam by `make k8s`), read and enforced by a real MinIO. No container starts here:
the policies go in as STS session policies, which MinIO parses with the same grammar."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from indutech_devtools.iam import COMPOSE_BUCKETS, COMPOSE_POLICIES, compose_policy_files
from tests.support.iam import assume_role, s3_client_as
from tests.support.stack import StackSettings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(compose_policy_files()))
async def test_minio_reads_and_enforces_the_compose_policy(stack: StackSettings, name: str) -> None:
    """Taken as written (its Id included), and nothing outside its resources is allowed."""
    assert {"lake": stack.s3.lake_bucket, "backup": stack.s3.backup_bucket} == COMPOSE_BUCKETS
    policy = json.loads((COMPOSE_POLICIES / name).read_text())
    credentials = await assume_role(stack, policy, name=name.removesuffix(".json"))
    async with s3_client_as(stack, credentials) as s3:
        for bucket in COMPOSE_BUCKETS.values():
            with pytest.raises(ClientError, match="AccessDenied"):
                await s3.put_object(Bucket=bucket, Key="compose-policy-test/nobody", Body=b"x")
