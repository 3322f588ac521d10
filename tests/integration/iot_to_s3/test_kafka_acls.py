"""iot-to-s3 on a Kafka user of its own with only the ACLs compose's Redpanda gives it
(deploy/compose/redpanda/init.sh), enforced by the stack's broker: enough for its flow
(read, group, transactions, dead letters) and nothing beside it."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from indutech_common.kafka import (
    KafkaAuthorizationError,
    create_consumer,
    start_client,
)
from tests.integration.iot_to_s3.conftest import (
    Lake,
    free_port,
    produce,
    read_dead_letters,
    records,
    start_worker,
    worker_env,
)
from tests.integration.iot_to_s3.test_chaos import wait_for_lake
from tests.support.kafka_acls import assert_read_refused, worker_kafka_user
from tests.support.stack import StackSettings
from tests.support.waits import wait_for_log


class TestKafkaAcls:
    @pytest.mark.slow
    @pytest.mark.timeout(150)
    async def test_the_worker_runs_on_its_acls_alone(
        self, stack: StackSettings, lake: Lake, tmp_path: Path, unique: str
    ) -> None:
        """Records into the lake once, a bad one to the dead letters, a clean exit; the same
        user can neither read the dead letters nor join another group."""
        names = {
            "iot.sensor-readings.v1": lake.sensor_topic,
            "iot.client-tickets.v1": lake.ticket_topic,
            "iot.dead-letter.v1": lake.dead_letter_topic,
            "iot-to-s3": lake.group_id,
            "iot-to-s3.": f"{lake.group_id}.",  # transactional ids: group.topic.partition
        }
        good = records(40, f"acl-{unique}")
        bad = [b'{"not json']
        log = tmp_path / "worker.log"
        with worker_kafka_user(stack, "iot-to-s3", f"iot-to-s3-{unique}", names) as user:
            env = worker_env(
                lake,
                INDUTECH_KAFKA__USERNAME=user.name,
                INDUTECH_KAFKA__PASSWORD=user.password,
                IOT_TO_S3_HEALTH__PORT=str(free_port()),
                IOT_TO_S3_ROTATION__IDLE_S="0.3",
            )
            process = start_worker(env, log)
            try:
                await wait_for_log(log, "partition_ready", process)
                stream = [r.to_json_bytes() for r in good]
                await produce(stack, lake.sensor_topic, [*stream[:20], *bad, *stream[20:]])
                ids = await wait_for_lake(stack, lake, {str(r.event_id) for r in good})
            finally:
                process.send_signal(signal.SIGTERM)
                exit_code = await asyncio.to_thread(process.wait, 30)
            assert exit_code == 0, log.read_text()[-3000:]
            assert ids == Counter(str(r.event_id) for r in good)
            letters = await read_dead_letters(stack, lake.dead_letter_topic)
            assert [m.value for m in letters] == bad
            assert "AuthorizationFailed" not in log.read_text()

            # the ACLs were in force: nothing beside the flow's own resources
            own = user.settings(stack.kafka)
            await assert_read_refused(own, lake.dead_letter_topic, group_id=lake.group_id)
            # another group's coordinator is refused at start, and the error says what to do
            stranger = create_consumer(own, lake.sensor_topic, group_id=f"other-{unique}")
            with pytest.raises(KafkaAuthorizationError, match=r"refused user .*Grant .* ACL"):
                await start_client(stranger, own)
