"""The worker's slots: a freed slot takes the next item at once, offsets are committed only
up to the first unfinished item, and a failure is redone from its offset."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from indutech_sql_backup import worker as worker_module
from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.worker import SqlBackupWorker

TP = TopicPartition("work", 0)


def record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=TP.topic,
        partition=TP.partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"t",
        value=f"item-{offset}".encode(),
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=6,
        headers=(),
    )


class FakeConsumer:
    def __init__(self, count: int) -> None:
        self.queue = [record(i) for i in range(count)]
        self.commits: list[int] = []
        self.seeks: list[int] = []

    async def getmany(
        self, *, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        taken, self.queue = self.queue[:max_records], self.queue[max_records:]
        if not taken:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        return {TP: taken}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets[TP])

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert tp == TP
        self.seeks.append(offset)


def make_worker(consumer: FakeConsumer, **overrides: Any) -> SqlBackupWorker:
    settings = SqlBackupSettings(
        erp={"database": "erp", "host": "erp.invalid", "user": "backup"},
        s3={"kms_key_id": "k"},
        health={"host": "127.0.0.1", "port": 0},
        parallel_chunks=2,
        idle_exit_s=0.2,
        **overrides,
    )
    worker = SqlBackupWorker(settings)
    worker.consumer = consumer
    return worker


async def test_a_free_slot_takes_the_next_item_without_waiting_for_the_slow_one() -> None:
    consumer = FakeConsumer(4)
    worker = make_worker(consumer)
    slow_may_finish = asyncio.Event()
    started: list[bytes] = []
    commits_while_slow: list[int] = []

    async def one(item: ConsumerRecord[bytes, bytes]) -> None:
        started.append(item.value)
        if item.offset == 0:
            await slow_may_finish.wait()
        elif item.offset == 3:
            commits_while_slow.extend(consumer.commits)
            slow_may_finish.set()

    worker._one = one  # type: ignore[method-assign,assignment]
    await asyncio.wait_for(worker.main_loop(), timeout=5)
    assert started == [b"item-0", b"item-1", b"item-2", b"item-3"]
    assert commits_while_slow == [], "nothing is committed past an unfinished item"
    assert consumer.commits[-1] == 4
    assert consumer.commits == sorted(consumer.commits)


async def test_a_failure_commits_what_is_before_it_and_seeks_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "RETRY_DELAY_S", 0.01)
    consumer = FakeConsumer(3)
    worker = make_worker(consumer)
    attempts: dict[int, int] = {}

    async def one(item: ConsumerRecord[bytes, bytes]) -> None:
        attempts[item.offset] = attempts.get(item.offset, 0) + 1
        if item.offset == 1 and attempts[1] == 1:
            raise RuntimeError("the source went away")

    def seek(tp: TopicPartition, offset: int) -> None:
        assert tp == TP
        consumer.seeks.append(offset)
        consumer.queue = [record(i) for i in range(offset, 3)]

    worker._one = one  # type: ignore[method-assign,assignment]
    consumer.seek = seek  # type: ignore[method-assign]
    await asyncio.wait_for(worker.main_loop(), timeout=5)
    assert consumer.seeks == [1]
    assert consumer.commits[0] == 1, "item 0 is committed, the failed item 1 is not"
    assert consumer.commits[-1] == 3
    assert attempts == {0: 1, 1: 2, 2: 1}
