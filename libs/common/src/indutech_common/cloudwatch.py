"""CloudWatch and CloudWatch Logs clients over verified HTTPS (moto's server locally)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from pydantic import SecretStr

from indutech_common.settings import CloudWatchSettings

if TYPE_CHECKING:
    from types_aiobotocore_cloudwatch import CloudWatchClient
    from types_aiobotocore_logs import CloudWatchLogsClient


def _config() -> AioConfig:
    # Throttling is retried by the caller with its own jittered backoff and buffer, so
    # botocore's own retries stay few: a long hidden retry would stall a scrape cycle.
    return AioConfig(
        retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30
    )


def _client_kwargs(settings: CloudWatchSettings) -> dict[str, object]:
    return {
        "region_name": settings.region,
        "endpoint_url": settings.endpoint_url,
        "verify": str(settings.ca_file) if settings.ca_file else True,
        "config": _config(),
        # None falls back to the default chain: the pod's IAM role (IRSA) in production.
        "aws_access_key_id": _reveal(settings.access_key_id),
        "aws_secret_access_key": _reveal(settings.secret_access_key),
    }


@asynccontextmanager
async def create_cloudwatch_client(settings: CloudWatchSettings) -> AsyncIterator[CloudWatchClient]:
    async with get_session().create_client("cloudwatch", **_client_kwargs(settings)) as client:  # type: ignore[call-overload]
        yield client


@asynccontextmanager
async def create_logs_client(settings: CloudWatchSettings) -> AsyncIterator[CloudWatchLogsClient]:
    async with get_session().create_client("logs", **_client_kwargs(settings)) as client:  # type: ignore[call-overload]
        yield client


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
