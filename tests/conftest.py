"""Shared fixtures: the real services of the local stack, isolated by unique names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import structlog

from tests.support.stack import StackNotRunningError, StackSettings, load_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
    # tests marked `last` leave a service busy for minutes (Samba cleaning up thousands
    # of deleted users): they run after everything else, in their collected order
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture(scope="session")
def stack() -> StackSettings:
    """The running local stack; a clear failure (not a skip) when it is not up."""
    if os.environ.get("INDUTECH_TEST_STACK") == "containers":
        pytest.skip("testcontainers provider: needs a Docker engine, which this machine lacks")
    try:
        return load_stack()
    except StackNotRunningError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topics, buckets prefixes, schemas and OUs."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
