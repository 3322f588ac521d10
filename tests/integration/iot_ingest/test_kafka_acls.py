"""iot-ingest on a Kafka user of its own with only the ACLs compose's Redpanda gives it
(deploy/compose/redpanda/init.sh), enforced by the stack's broker: its transaction of
records, dead letters and checkpoints, and its checkpoint read at start, and nothing more."""

from __future__ import annotations

from pathlib import Path

from indutech_devtools.iot import GenerateOptions, generate, records
from tests.integration.iot_ingest.conftest import (
    IngestTopics,
    generated_ids,
    ingest_settings,
    read_committed,
    running,
)
from tests.support.kafka_acls import assert_read_refused, worker_kafka_user
from tests.support.stack import StackSettings


class TestKafkaAcls:
    async def test_the_worker_runs_on_its_acls_alone(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str
    ) -> None:
        """Records and a dead letter committed, a restart resumes from its checkpoints (read
        back with its own rights); the same user cannot read the record topics."""
        names = {
            "iot.sensor-readings.v1": topics.sensor,
            "iot.client-tickets.v1": topics.ticket,
            "iot.dead-letter.v1": topics.dead_letter,
            "iot.ingest-checkpoints.v1": topics.checkpoint,
            # the transactional-id prefix "iot-ingest" covers the test's iot-ingest-test-…
        }
        options = GenerateOptions(directory=san, rate=0, count=300, seed=3, rotate_every=100)
        assert generate(options) == 300
        (san / "sensors" / "bad.jsonl").write_text('{"not json\n')
        with worker_kafka_user(stack, "iot-ingest", f"iot-ingest-{unique}", names) as user:
            own = user.settings(stack.kafka)
            settings = ingest_settings(stack, topics, san, unique, kafka=own)
            async with running(settings):
                await read_committed(stack, topics, expected=300, expected_dead=1)
            # the second start reads the checkpoints back (read on its own topic) and sends
            # nothing again
            async with running(settings) as worker:
                assert len(worker.tailer.states) >= 3
            found = await read_committed(stack, topics, expected=300, expected_dead=1)
            assert found.duplicates == {}
            assert found.ids == generated_ids(records(options))
            assert len(found.dead_letters) == 1

            # the ACLs were in force: the records are write-only to it
            await assert_read_refused(own, topics.sensor, group_id=None)
