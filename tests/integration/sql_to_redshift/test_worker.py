# ruff: noqa: S608 - SQL of identifiers the test made itself
"""The worker: sql-backup's real announcement on sql.backup-completed.v1 (real Kafka) makes it
load the announced table's nights; a repeated announcement changes nothing."""

from __future__ import annotations

import asyncio

import pytest

from indutech_common.lifecycle import EXIT_OK
from indutech_common.s3 import create_s3_client
from indutech_common.schemas import Topics
from indutech_sql_backup.cli import announce
from indutech_sql_backup.engine import Engine
from indutech_sql_to_redshift.worker import SqlToRedshiftWorker
from tests.integration.sql_backup.conftest import generate, settings_for
from tests.integration.sql_to_redshift.conftest import (
    DAY0,
    RIGHTS,
    Names,
    assert_sql_to_redshift_policy_in_force,
    fetch,
    loader_settings,
    s3_with_rights,
)
from tests.support.kafka import temporary_topics
from tests.support.stack import StackSettings


async def heads(stack: StackSettings, names: Names) -> list[tuple[object, ...]]:
    try:
        return await fetch(stack, f"SELECT source_table, day, kind FROM {names.raw}._load_state")
    except Exception:
        return []


class TestWorker:
    @pytest.mark.slow
    @pytest.mark.timeout(180)
    @pytest.mark.parametrize("rights", RIGHTS)
    async def test_an_announcement_loads_its_table(
        self, stack: StackSettings, names: Names, monkeypatch: pytest.MonkeyPatch, rights: str
    ) -> None:
        """Also with only the rights of deploy/iam/sql-to-redshift.json, readiness included."""
        await generate(stack, names.erp)
        s3_settings, credentials = await s3_with_rights(rights, stack, names, monkeypatch)
        topics = {
            names.erp.completed_topic: Topics.BACKUP_COMPLETED,
            names.erp.work_topic: Topics.BACKUP_WORK,  # sql-backup's announcer checks both
        }
        async with temporary_topics(stack.kafka, topics):
            backup = settings_for(stack, names.erp)
            async with create_s3_client(stack.s3) as s3:
                engine = Engine(backup, s3)
                tables = await engine.discover([f"{names.erp.schema}.products"])
                results = await engine.backup(tables, kind="full", day=DAY0)
                await announce(backup, engine, results)
            worker = SqlToRedshiftWorker(loader_settings(stack, names, s3=s3_settings))
            task = asyncio.create_task(worker.serve(install_signal_handlers=False))
            try:
                for _ in range(600):
                    if await heads(stack, names):
                        break
                    await asyncio.sleep(0.1)
                # the same announcement again (at least once): nothing more is applied
                async with create_s3_client(stack.s3) as s3:
                    await announce(backup, Engine(backup, s3), [(results[0][0], True)])
                await asyncio.sleep(2)
                sample = worker.metrics.registry.get_sample_value
                labels = {"worker": "sql-to-redshift", "table": "products"}
                assert sample("indutech_sql_to_redshift_lag_seconds", labels) == 0.0
                rows = sample("indutech_sql_to_redshift_table_rows", labels)
                pings = await worker.health.check()  # what /readyz answers
                assert pings, "the worker registered no readiness pings"
                assert all(p.ok for p in pings), pings
            finally:
                worker.request_exit()
                assert await asyncio.wait_for(task, 60) == EXIT_OK
        assert await heads(stack, names) == [("products", DAY0, "full")]
        ledger = await fetch(stack, f"SELECT count(*) FROM {names.raw}._load_ledger")
        assert ledger == [(1,)]
        source = await fetch(
            stack,
            f"SELECT count(*) FROM {names.erp.schema}.products",
            source=True,
        )
        assert await fetch(stack, f"SELECT count(*) FROM {names.raw}.products") == source
        assert rows == source[0][0]
        history = await fetch(stack, f"SELECT count(*) FROM {names.models}.dim_product")
        assert history == source
        if credentials:
            await assert_sql_to_redshift_policy_in_force(stack, names, credentials)
