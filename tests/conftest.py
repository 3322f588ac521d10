"""Shared fixtures: the real services of the local stack, isolated by unique names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import structlog

from tests.support.containers import ContainersStack, docker_answers
from tests.support.stack import StackNotRunningError, StackSettings, load_stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
    # tests marked `last` leave a service busy for minutes (Samba cleaning up thousands
    # of deleted users): they run after everything else, in their collected order
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture(scope="session")
def stack() -> Iterator[StackSettings]:
    """The running local stack; a clear failure (not a skip) when it is not up.

    ``INDUTECH_TEST_STACK=containers``: compose's services through testcontainers instead
    (tests/support/containers.py), skipped where no Docker engine answers. Never run in
    this project's CI (no Docker engine on its machines)."""
    if os.environ.get("INDUTECH_TEST_STACK") == "containers":
        if not docker_answers():
            pytest.skip(
                "INDUTECH_TEST_STACK=containers needs a Docker engine, and none answers here "
                "(DOCKER_HOST or /var/run/docker.sock)"
            )
        with ContainersStack().running() as settings:
            yield settings
        return
    try:
        yield load_stack()
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
