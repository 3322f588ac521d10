"""Topics of one test, bench or demo run: created before, deleted after.

Every run names its own topics (``test.<unique>.…``, ``bench.…``, ``demo.<run>.…``)
so that runs never read each other's records. Each is created from the topic
contract (``{actual name: contract name}``) with what ``python -m
indutech_common.topics create`` would give it, so the workers' start-up check
passes on exactly the settings production uses (one replica: the local stack has
one broker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager

from aiokafka.admin import AIOKafkaAdminClient

from indutech_common.kafka import TopicBinding, connection_kwargs
from indutech_common.kafka.topics import create_topics as create_contract_topics
from indutech_common.settings import KafkaSettings


async def create_topics(
    kafka: KafkaSettings, topics: Mapping[str, str], *, partitions: Mapping[str, int] | None = None
) -> None:
    """Create ``{actual name: contract name}`` with the contract's settings.

    ``partitions`` gives some of them more partitions than the contract (by actual name).
    """
    bindings = [TopicBinding.of(name, contract) for name, contract in topics.items()]
    reports = await create_contract_topics(
        kafka, bindings, environment="local", partitions=partitions
    )
    bad = [report.describe() for report in reports if not report.ok]
    if bad:
        raise AssertionError(f"test topics do not match the contract: {bad}")


async def delete_topics(kafka: KafkaSettings, names: Collection[str]) -> None:
    admin = AIOKafkaAdminClient(**connection_kwargs(kafka))
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


@asynccontextmanager
async def temporary_topics(
    kafka: KafkaSettings, topics: Mapping[str, str], *, partitions: Mapping[str, int] | None = None
) -> AsyncIterator[list[str]]:
    """The topics exist inside the block and are deleted after it, even on failure."""
    await create_topics(kafka, topics, partitions=partitions)
    try:
        yield list(topics)
    finally:
        await delete_topics(kafka, list(topics))
