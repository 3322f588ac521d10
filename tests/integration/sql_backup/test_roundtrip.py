"""Backup → restore gives the source back, row by row; three days of deltas restore day by day."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest

from indutech_common.s3 import create_s3_client
from indutech_sql_backup.dialects import TableRef
from indutech_sql_backup.engine import Engine
from indutech_sql_backup.restore import Restorer
from indutech_sql_backup.sinks import read_part
from indutech_sql_backup.verify import verify
from tests.integration.sql_backup.conftest import (
    DEMO_TABLES,
    RIGHTS,
    Erp,
    assert_sql_backup_policy_in_force,
    backup_keys,
    generate,
    rows_of,
    s3_with_rights,
    settings_for,
    source_state,
)
from tests.support.stack import StackSettings

DAY0 = date(2026, 3, 1)


class TestRoundTrip:
    @pytest.mark.slow
    async def test_full_backup_restores_identical_tables(
        self, stack: StackSettings, erp: Erp
    ) -> None:
        """Every demo table comes back equal row by row: exact decimals, NULLs, LOBs, bytes."""
        await generate(stack, erp)
        settings = settings_for(stack, erp)
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings, s3)
            tables = await engine.discover()
            assert sorted(t.ref.name for t in tables) == sorted(DEMO_TABLES)
            results = await engine.backup(tables, kind="full", day=DAY0)
            assert all(created for _, created in results)
            lines = next(m for m, _ in results if m.plan.table == "order_lines")
            assert len(lines.parts) > 1, "the table should have been split into chunks"
            part = await engine.store.get_bytes(lines.parts[0].key)
            assert part is not None
            stored = read_part(part)
            assert stored.schema.field("amount").type == pa.decimal128(18, 2)
            customers = next(m for m, _ in results if m.plan.table == "customers")
            part = await engine.store.get_bytes(customers.parts[0].key)
            assert part is not None
            assert read_part(part).schema.field("created_at").type == pa.timestamp("us", tz="UTC")
            report = await verify(engine, TableRef(erp.schema, "order_lines"), day=None)
            assert report.ok, report.lines
            restorer = Restorer(settings, s3)
            reports = {
                table: await restorer.restore(
                    TableRef(erp.schema, table), day=DAY0, target=TableRef(erp.target_schema, table)
                )
                for table in DEMO_TABLES
            }
        source = await source_state(stack, erp)
        for table in DEMO_TABLES:
            restored = [tuple(r) for r in await rows_of(stack.warehouse, erp.target_schema, table)]
            assert restored == source[table], f"{table} differs after restore"
            assert reports[table].rows == len(source[table]), f"{table}: rows reported"
        notes = [r[9] for r in source["customers"] if r[9] is not None]
        assert max(len(n.encode()) for n in notes) > 50_000, "the demo should carry large LOBs"
        assert any(r[4] == r[4].__class__("9999999999999999.99") for r in source["orders"])
        keys = await backup_keys(stack, erp.prefix)
        assert sum(k.endswith("/_manifest.json") for k in keys) == len(DEMO_TABLES)


class TestDelta:
    @pytest.mark.slow
    @pytest.mark.timeout(180)
    async def test_restore_as_of_each_day_equals_the_source_that_day(
        self, stack: StackSettings, erp: Erp
    ) -> None:
        """Full on day 0, then three days of inserts/updates/deletes, each backed up as a delta."""
        await generate(stack, erp)
        settings = settings_for(stack, erp, chunk_rows=2000)
        expected = {}
        async with create_s3_client(stack.s3) as s3:
            engine = Engine(settings, s3)
            tables = await engine.discover()
            await engine.backup(tables, kind="full", day=DAY0)
            expected[DAY0] = await source_state(stack, erp)
            for day in (1, 2, 3):
                await generate(stack, erp, day=day)
                when = date(2026, 3, 1 + day)
                results = await engine.backup(tables, kind="delta", day=when)
                ops = {m.plan.table: m.parts[0].ops for m, _ in results}
                assert ops["invoices"].get("D", 0) > 0, "deletes must be captured"
                assert ops["orders"].get("U", 0) > 0
                expected[when] = await source_state(stack, erp)
            again = await engine.backup(tables, kind="delta", day=date(2026, 3, 4))
            assert not any(created for _, created in again), "a finished day is not redone"
            restorer = Restorer(settings, s3)
            for when, state in expected.items():
                for table in DEMO_TABLES:
                    target = TableRef(erp.target_schema, f"{table}_{when:%d}")
                    report = await restorer.restore(
                        TableRef(erp.schema, table), day=when, target=target
                    )
                    assert len(report.runs) == 1 + (when - DAY0).days
                    restored = await rows_of(
                        stack.warehouse, target.schema, target.name, demo_table=table
                    )
                    assert [tuple(r) for r in restored] == state[table], f"{table} as of {when}"
        assert expected[DAY0]["products"] != expected[date(2026, 3, 4)]["products"]


class TestMultipart:
    @pytest.mark.slow
    @pytest.mark.parametrize("rights", RIGHTS)
    async def test_parts_past_the_threshold_go_up_multipart_encrypted_and_verify(
        self, stack: StackSettings, erp: Erp, monkeypatch: pytest.MonkeyPatch, rights: str
    ) -> None:
        """With a 1-byte threshold every part is a multipart upload: each object is SSE-KMS
        encrypted, has a multipart ETag, and verifies (SHA-256, rows, content) against its
        manifest and the source, LOB table included (also with only the rights of
        deploy/iam/sql-backup.json: multipart is its own set of S3 calls)."""
        await generate(stack, erp)
        s3_settings, credentials = await s3_with_rights(rights, stack, erp, monkeypatch)
        settings = settings_for(stack, erp, s3=s3_settings, multipart_threshold_bytes=1)
        async with create_s3_client(settings.s3) as s3, create_s3_client(stack.s3) as root:
            engine = Engine(settings, s3)
            tables = await engine.discover([f"{erp.schema}.order_lines", f"{erp.schema}.customers"])
            results = await engine.backup(tables, kind="full", day=DAY0)
            parts = [p for manifest, _ in results for p in manifest.parts]
            assert len(parts) > 2
            for part in parts:
                head = await root.head_object(Bucket=stack.s3.backup_bucket, Key=part.key)
                assert head["ETag"].strip('"').endswith("-1"), (part.key, head["ETag"])
                assert head["ServerSideEncryption"] == "aws:kms"
                assert head["SSEKMSKeyId"].endswith(str(stack.s3.kms_key_id))
            for name in ("order_lines", "customers"):
                report = await verify(engine, TableRef(erp.schema, name), day=None)
                assert report.ok, report.lines
            uploads = await root.list_multipart_uploads(
                Bucket=stack.s3.backup_bucket, Prefix=erp.prefix
            )
        assert not uploads.get("Uploads"), "no multipart upload may be left open"
        if credentials:
            await assert_sql_backup_policy_in_force(stack, erp, credentials)
