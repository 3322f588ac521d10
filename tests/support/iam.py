"""A worker's IAM policy (deploy/iam/<worker>.json) applied for real by the stack's S3 server.

The policy becomes the session policy of temporary credentials from MinIO's STS
``AssumeRole``: the credentials can do only what the root user can *and* the policy
allows, which is how AWS evaluates a role's identity policy. A worker given them in
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` (botocore's default
chain, the path IRSA takes in production) then shows whether its policy grants enough
(a missing action is an AccessDenied in the flow) and no more (the tests try a neighbour's
keys).

The move is ``indutech_devtools.iam.moved_policy`` (compose's MinIO users get theirs from
it too): the production bucket names become the stack's, each object path gains the test's
key prefix (production runs with an empty prefix), and only the ``s3:`` statements are
kept. CloudWatch's rights are not tested this way (moto checks no IAM).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiobotocore.session import get_session

from indutech_common.settings import S3Settings
from indutech_devtools.iam import moved_policy
from tests.support.stack import StackSettings


async def assume_worker_role(
    worker: str, stack: StackSettings, prefixes: Mapping[str, str]
) -> dict[str, str]:
    """Temporary credentials limited by ``worker``'s policy, as the environment variables of
    botocore's default credential chain."""
    local = {"lake": stack.s3.lake_bucket, "backup": stack.s3.backup_bucket}
    return await assume_role(stack, moved_policy(worker, local, prefixes), name=worker)


async def assume_role(
    stack: StackSettings, policy: Mapping[str, Any], *, name: str
) -> dict[str, str]:
    """Temporary credentials limited by ``policy`` (MinIO parses it: a policy it cannot
    read is refused here)."""
    s3 = stack.s3
    if s3.access_key_id is None or s3.secret_access_key is None:
        raise RuntimeError("the local stack's S3 keys are missing from stack.env: make stack-up")
    async with get_session().create_client(
        "sts",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id.get_secret_value(),
        aws_secret_access_key=s3.secret_access_key.get_secret_value(),
        verify=str(stack.ca_file),
    ) as sts:
        answer = await sts.assume_role(
            RoleArn=f"arn:aws:iam::000000000000:role/indutech-flows-{name}",
            RoleSessionName=f"policy-test-{name}",
            Policy=json.dumps(policy),
            DurationSeconds=3600,
        )
    credentials = answer["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


def env_with_credentials(env: Mapping[str, str], credentials: Mapping[str, str]) -> dict[str, str]:
    """A worker's environment with ``credentials`` in place of the stack's S3 keys."""
    out = {
        k: v
        for k, v in env.items()
        if k not in ("INDUTECH_S3__ACCESS_KEY_ID", "INDUTECH_S3__SECRET_ACCESS_KEY")
        and not k.startswith("AWS_")
    }
    return {**out, **credentials}


def use_credentials(
    monkeypatch: pytest.MonkeyPatch, credentials: Mapping[str, str], s3: S3Settings
) -> S3Settings:
    """For a worker in this process: ``credentials`` in the environment (until the test
    ends) and ``s3`` without its keys, so the worker's client takes botocore's default
    chain as under IRSA. Clients given keys explicitly (the test's own) are unaffected."""
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    return s3.model_copy(update={"access_key_id": None, "secret_access_key": None})


@asynccontextmanager
async def s3_client_as(stack: StackSettings, credentials: Mapping[str, str]) -> AsyncIterator[Any]:
    """An S3 client holding ``credentials`` (to try what the policy must deny)."""
    async with get_session().create_client(
        "s3",
        endpoint_url=stack.s3.endpoint_url,
        region_name=stack.s3.region,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials["AWS_SESSION_TOKEN"],
        verify=str(stack.ca_file),
    ) as client:
        yield client
