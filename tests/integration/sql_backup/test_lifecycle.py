"""A replica's clients are registered with the base Worker and closed by it at stop."""

from __future__ import annotations

import pytest
from aiokafka.errors import ConsumerStoppedError

from indutech_sql_backup.worker import SqlBackupWorker
from tests.integration.sql_backup.conftest import Erp, settings_for
from tests.support.stack import StackSettings

pytestmark = pytest.mark.integration


class TestReplicaLifecycle:
    async def test_an_idle_replica_exits_and_its_consumer_is_closed(
        self, stack: StackSettings, erp: Erp
    ) -> None:
        """No shutdown hook of its own: the base Worker closes what startup registered."""
        worker = SqlBackupWorker(settings_for(stack, erp, idle_exit_s=0.5))
        assert await worker.serve(install_signal_handlers=False) == 0
        with pytest.raises(ConsumerStoppedError):
            await worker.consumer.getmany(timeout_ms=10)
