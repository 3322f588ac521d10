"""A worker's IAM policy (deploy/iam/<worker>.json) applied for real by the stack's S3 server.

The policy becomes the session policy of temporary credentials from MinIO's STS
``AssumeRole``: the credentials can do only what the root user can *and* the policy
allows, which is how AWS evaluates a role's identity policy. A worker given them in
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` (botocore's default
chain, the path IRSA takes in production) then shows whether its policy grants enough
(a missing action is an AccessDenied in the flow) and no more (the tests try a neighbour's
keys).

What is mapped: the production bucket names of values-prod.yaml become the stack's, and
each object path gains the test's key prefix (production runs with an empty prefix). What
is left out: the ``kms:`` statements — MinIO encrypts with its own key server-side and has
no client-side KMS permission — and CloudWatch (moto checks no IAM).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import yaml
from aiobotocore.session import get_session

from indutech_common.settings import S3Settings
from tests.support.stack import REPO_ROOT, StackSettings

IAM_DIR = REPO_ROOT / "deploy" / "iam"
PROD_VALUES = REPO_ROOT / "deploy" / "helm" / "indutech-flows" / "values-prod.yaml"
S3_ARN = "arn:aws:s3:::"


def production_buckets() -> dict[str, str]:
    """{"lake": name, "backup": name} as values-prod.yaml (and so deploy/iam) names them."""
    shared = yaml.safe_load(PROD_VALUES.read_text())["shared"]
    return {
        "lake": shared["INDUTECH_S3__LAKE_BUCKET"],
        "backup": shared["INDUTECH_S3__BACKUP_BUCKET"],
    }


def session_policy(
    worker: str, stack: StackSettings, prefixes: Mapping[str, str]
) -> dict[str, Any]:
    """deploy/iam/``worker``.json with its S3 statements moved onto the stack's buckets, each
    object path under ``prefixes[bucket role]`` ("lake" or "backup"; "" for none)."""
    document = json.loads((IAM_DIR / f"{worker}.json").read_text())
    local = {"lake": stack.s3.lake_bucket, "backup": stack.s3.backup_bucket}
    roles = {name: role for role, name in production_buckets().items()}
    statements = []
    for statement in document["Statement"]:
        if not all(action.startswith("s3:") for action in statement["Action"]):
            continue
        resources = []
        for arn in statement["Resource"]:
            bucket, _, path = arn.removeprefix(S3_ARN).partition("/")
            role = roles[bucket]  # KeyError: a bucket values-prod does not configure
            moved = f"{S3_ARN}{local[role]}"
            resources.append(f"{moved}/{prefixes.get(role, '')}{path}" if path else moved)
        statements.append({**statement, "Resource": resources})
    if not statements:
        raise ValueError(f"deploy/iam/{worker}.json grants nothing on S3")
    return {"Version": document["Version"], "Statement": statements}


async def assume_worker_role(
    worker: str, stack: StackSettings, prefixes: Mapping[str, str]
) -> dict[str, str]:
    """Temporary credentials limited by ``worker``'s policy, as the environment variables of
    botocore's default credential chain."""
    s3 = stack.s3
    if s3.access_key_id is None or s3.secret_access_key is None:
        raise RuntimeError("the local stack's S3 keys are missing from stack.env: make stack-up")
    policy = session_policy(worker, stack, prefixes)
    async with get_session().create_client(
        "sts",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id.get_secret_value(),
        aws_secret_access_key=s3.secret_access_key.get_secret_value(),
        verify=str(stack.ca_file),
    ) as sts:
        answer = await sts.assume_role(
            RoleArn=f"arn:aws:iam::000000000000:role/indutech-flows-{worker}",
            RoleSessionName=f"policy-test-{worker}",
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
