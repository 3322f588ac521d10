"""The worker's slots: a freed slot takes the next item at once, offsets are committed only
up to the first unfinished item, a failure is redone from its offset, and an item that
keeps failing by itself is dead-lettered after ``max_attempts`` while its partition moves on.

The work done per item is injected through the worker's public ``run_item`` seam."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog.testing
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from indutech_sql_backup.config import SqlBackupSettings
from indutech_sql_backup.errors import SourceUnavailableError, SqlBackupError
from indutech_sql_backup.worker import ItemRunner, SqlBackupWorker

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


class FakeDeadLetters:
    """Records dead letters; ``flush`` marks everything sent so far as delivered."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.delivered = 0

    async def send(
        self,
        value: bytes,
        *,
        reason: str,
        error: str,
        source: str,
        offset: int | str,
        key: bytes | None = None,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        self.sent.append(
            {
                "value": value,
                "reason": reason,
                "error": error,
                "source": source,
                "offset": offset,
                "key": key,
                "headers": dict(extra_headers),
            }
        )

    async def flush(self) -> None:
        self.delivered = len(self.sent)


def make_worker(
    consumer: FakeConsumer,
    run_item: ItemRunner,
    letters: FakeDeadLetters | None = None,
    **overrides: Any,
) -> SqlBackupWorker:
    values: dict[str, Any] = {"parallel_chunks": 2, "idle_exit_s": 0.2, **overrides}
    settings = SqlBackupSettings(
        erp={"database": "erp", "host": "erp.invalid", "user": "backup"},
        s3={"kms_key_id": "k"},
        health={"host": "127.0.0.1", "port": 0},
        **values,
    )
    worker = SqlBackupWorker(settings, run_item=run_item)
    worker.consumer = consumer
    worker.dead_letters = letters or FakeDeadLetters()
    return worker


def redelivering(consumer: FakeConsumer, count: int) -> None:
    """A seek makes the consumer deliver again from that offset, as Kafka does."""

    def seek(tp: TopicPartition, offset: int) -> None:
        assert tp == TP
        consumer.seeks.append(offset)
        consumer.queue = [record(i) for i in range(offset, count)]

    consumer.seek = seek  # type: ignore[method-assign]


async def test_a_free_slot_takes_the_next_item_without_waiting_for_the_slow_one() -> None:
    consumer = FakeConsumer(4)
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

    worker = make_worker(consumer, one)
    await asyncio.wait_for(worker.main_loop(), timeout=5)
    assert started == [b"item-0", b"item-1", b"item-2", b"item-3"]
    assert commits_while_slow == [], "nothing is committed past an unfinished item"
    assert consumer.commits[-1] == 4
    assert consumer.commits == sorted(consumer.commits)


async def test_a_failure_commits_what_is_before_it_and_seeks_back() -> None:
    consumer = FakeConsumer(3)
    redelivering(consumer, 3)
    attempts: dict[int, int] = {}

    async def one(item: ConsumerRecord[bytes, bytes]) -> None:
        attempts[item.offset] = attempts.get(item.offset, 0) + 1
        if item.offset == 1 and attempts[1] == 1:
            raise RuntimeError("the chunk failed once")

    letters = FakeDeadLetters()
    worker = make_worker(consumer, one, letters, retry_delay_s=0.01)
    await asyncio.wait_for(worker.main_loop(), timeout=5)
    assert consumer.seeks == [1]
    assert consumer.commits[0] == 1, "item 0 is committed, the failed item 1 is not"
    assert consumer.commits[-1] == 3
    assert attempts == {0: 1, 1: 2, 2: 1}
    assert letters.sent == []


class TestPoisonItems:
    async def test_an_item_failing_every_time_is_dead_lettered_after_max_attempts(self) -> None:
        """Item 1 always fails: it is tried max_attempts times, dead-lettered (delivered
        before its offset is committed) with its reason and attempts, an error is counted,
        and the items after it on the partition are done and committed."""
        consumer = FakeConsumer(4)
        redelivering(consumer, 4)
        attempts: dict[int, int] = {}
        done: list[int] = []

        async def one(item: ConsumerRecord[bytes, bytes]) -> None:
            attempts[item.offset] = attempts.get(item.offset, 0) + 1
            if item.offset == 1:
                raise SqlBackupError('relation "erp.gone" does not exist')
            done.append(item.offset)

        letters = FakeDeadLetters()
        worker = make_worker(consumer, one, letters, max_attempts=3, retry_delay_s=0.01)
        with structlog.testing.capture_logs() as logs:
            await asyncio.wait_for(worker.main_loop(), timeout=5)
        assert attempts[1] == 3
        assert len(letters.sent) == 1
        letter = letters.sent[0]
        assert letter["value"] == b"item-1"
        assert letter["offset"] == 1
        assert letter["reason"] == "work_item_failed"
        assert letter["key"] == b"t"
        assert 'relation "erp.gone" does not exist' in letter["error"]
        assert letter["headers"]["attempts"] == b"3"
        assert letters.delivered == 1
        assert consumer.commits[-1] == 4, "the partition moved past the dead letter"
        assert sorted(set(done)) == [0, 2, 3]
        assert worker.dead_lettered == 1
        assert worker.attempts == {}
        labels = {"worker": worker.metrics.worker, "kind": "work_item_dead_lettered"}
        assert worker.metrics.registry.get_sample_value("indutech_errors_total", labels) == 1
        events = [e for e in logs if e["event"] == "work_item_dead_lettered"]
        assert len(events) == 1
        assert events[0]["attempts"] == 3

    async def test_an_outage_is_retried_without_counting_attempts(self) -> None:
        """Failures of the environment (the source down) never dead-letter: every item would
        fail the same; once it is back the item is done."""
        consumer = FakeConsumer(1)
        redelivering(consumer, 1)
        calls = 0

        async def one(item: ConsumerRecord[bytes, bytes]) -> None:
            del item
            nonlocal calls
            calls += 1
            if calls <= 4:
                raise SourceUnavailableError("could not reach the erp database")

        letters = FakeDeadLetters()
        worker = make_worker(consumer, one, letters, max_attempts=2, retry_delay_s=0.01)
        await asyncio.wait_for(worker.main_loop(), timeout=5)
        assert calls == 5
        assert letters.sent == []
        assert consumer.commits[-1] == 1

    async def test_a_malformed_work_item_is_dead_lettered_by_the_real_item_runner(self) -> None:
        """No stand-in here: the worker's own process_item refuses bytes that are no work
        item; after max_attempts they go to the dead letters as they came."""
        consumer = FakeConsumer(1)
        redelivering(consumer, 1)
        letters = FakeDeadLetters()
        settings = SqlBackupSettings(
            erp={"database": "erp", "host": "erp.invalid", "user": "backup"},
            s3={"kms_key_id": "k"},
            health={"host": "127.0.0.1", "port": 0},
            idle_exit_s=0.2,
            max_attempts=2,
            retry_delay_s=0.01,
        )
        worker = SqlBackupWorker(settings)
        worker.consumer = consumer
        worker.dead_letters = letters
        await asyncio.wait_for(worker.main_loop(), timeout=5)
        assert [(d["value"], d["headers"]) for d in letters.sent] == [
            (b"item-0", {"attempts": b"2"})
        ]
        assert "ValidationError" in letters.sent[0]["error"]
        assert consumer.commits[-1] == 1
