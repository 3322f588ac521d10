"""Topics of one test, bench or demo run: created before, deleted after.

Every run names its own topics (``test.<unique>.…``, ``bench.…``, ``demo.<run>.…``)
so that runs never read each other's records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from indutech_common.kafka import connection_kwargs
from indutech_common.settings import KafkaSettings


@asynccontextmanager
async def _admin(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**connection_kwargs(kafka))
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def create_topics(
    kafka: KafkaSettings, partitions: Mapping[str, int], *, compacted: Collection[str] = ()
) -> None:
    """Create ``{topic: partitions}``; the names in ``compacted`` get ``cleanup.policy=compact``."""
    async with _admin(kafka) as admin:
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=count,
                    replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"} if name in compacted else {},
                )
                for name, count in partitions.items()
            ]
        )


async def delete_topics(kafka: KafkaSettings, names: Collection[str]) -> None:
    async with _admin(kafka) as admin:
        await admin.delete_topics(list(names))


@asynccontextmanager
async def temporary_topics(
    kafka: KafkaSettings, partitions: Mapping[str, int], *, compacted: Collection[str] = ()
) -> AsyncIterator[list[str]]:
    """The topics exist inside the block and are deleted after it, even on failure."""
    await create_topics(kafka, partitions, compacted=compacted)
    try:
        yield list(partitions)
    finally:
        await delete_topics(kafka, list(partitions))
