# ruff: noqa: S608 - SQL of identifiers the test made itself
"""The Redshift staging sequence on the real stack (no Redshift runs here): for each night,
the COPY manifest written to MinIO lists exactly the night's checked parts (mandatory, each
with its object's length), the COPY of what it lists fills the table, and the manifests are
gone after. Redshift's ``COPY … MANIFEST`` is played on PostgreSQL by loading the objects
the manifest lists; the result equals the PostgreSQL path's, truncate markers included."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg
import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs

from indutech_common.s3 import create_s3_client
from indutech_common.warehouse import connect_warehouse, copy_arrow_batches
from indutech_devtools.iam import moved_policy
from indutech_sql_to_redshift.loading import Loading
from indutech_sql_to_redshift.sinks import S3ManifestStager, Target, WarehouseSink
from indutech_sql_to_redshift.sinks.sql import Statements
from indutech_sql_to_redshift.sources import BackupSource
from tests.integration.sql_to_redshift.conftest import (
    RIGHTS,
    Backups,
    Names,
    assert_sql_to_redshift_policy_in_force,
    load_all,
    loader_settings,
    night,
    run_source_sql,
    s3_with_rights,
    staging_prefix_of,
    warehouse_state,
)
from tests.support.iam import assume_role, assume_worker_role, s3_client_as, use_credentials
from tests.support.s3 import list_keys
from tests.support.stack import StackSettings

TABLES = ("customers", "gl_entries", "invoices", "order_lines", "orders", "products")
ROLE = "arn:aws:iam::123456789012:role/indutech-redshift-copy"


def split(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


class ReplayedCopy(S3ManifestStager):
    """Redshift's ``COPY … MANIFEST`` played on PostgreSQL: the manifest read back from S3
    (by ``redshift``: Redshift's own client), each listed object fetched (its length checked
    against ``content_length``) and copied."""

    def __init__(self, s3: Any, *, redshift: Any, **kwargs: Any) -> None:
        super().__init__(s3, **kwargs)
        self.redshift = redshift
        self.manifests: list[dict[str, Any]] = []

    async def get(self, url: str) -> bytes:
        bucket, key = split(url)
        response = await self.redshift.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def copy(self, connection: asyncpg.Connection, target: Target, manifest_uri: str) -> None:
        # the statement Redshift would run names this manifest
        statement = self.statements.rs_copy_manifest(
            target.qualified, manifest_uri=manifest_uri, iam_role=self.iam_role
        )
        assert f"FROM '{manifest_uri}'" in statement
        manifest = json.loads(await self.get(manifest_uri))
        self.manifests.append(manifest)
        for entry in manifest["entries"]:
            assert entry["mandatory"] is True
            data = await self.get(entry["url"])
            assert len(data) == entry["meta"]["content_length"]
            table = pq.read_table(io.BytesIO(data))
            await copy_arrow_batches(
                connection, target.table, table.to_batches(), schema_name=target.schema
            )


@asynccontextmanager
async def redshift_path(
    stack: StackSettings, names: Names, s3: Any, redshift: Any
) -> AsyncIterator[tuple[BackupSource, ReplayedCopy, WarehouseSink]]:
    """The loader's Redshift route on ``names``: the backup read and the manifests written
    with ``s3``, Redshift's COPY (played) reading with ``redshift``; the sink migrated."""
    source = BackupSource(
        s3,
        bucket=stack.s3.backup_bucket,
        prefix=names.erp.prefix,
        database=stack.erp.database,
        schema=names.erp.schema,
    )
    stager = ReplayedCopy(
        s3,
        redshift=redshift,
        backup_bucket=stack.s3.backup_bucket,
        staging_bucket=stack.s3.lake_bucket,
        staging_prefix=staging_prefix_of(names),
        iam_role=ROLE,
        statements=Statements(names.raw, "redshift"),
    )
    sink = await WarehouseSink.open(
        stack.warehouse, raw_schema=names.raw, model_schema=names.models, stager=stager
    )
    try:
        await sink.migrate()
        yield source, stager, sink
    finally:
        await sink.close()


async def drop(stack: StackSettings, *schemas: str) -> None:
    connection = await connect_warehouse(stack.warehouse)
    try:
        for schema in schemas:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


class TestRedshiftStaging:
    @pytest.mark.slow
    @pytest.mark.timeout(300)
    @pytest.mark.parametrize("rights", RIGHTS)
    async def test_manifest_copy_loads_what_the_postgres_path_loads(
        self, stack: StackSettings, names: Names, monkeypatch: pytest.MonkeyPatch, rights: str
    ) -> None:
        """Also with only the rights of deploy/iam/sql-to-redshift.json (and Redshift's COPY
        with those of deploy/iam/redshift-copy.json): both paths, three nights each."""
        backups = Backups(stack, names, TABLES)
        await backups.full()
        await backups.delta(1)
        # a truncated table: the delta's parts carry truncate markers (T rows) whose chunks'
        # key ranges are cleared before the new rows go in
        await run_source_sql(
            stack,
            f"TRUNCATE {names.erp.schema}.gl_entries",
            f"INSERT INTO {names.erp.schema}.gl_entries VALUES "
            "(1, DATE '2026-03-03', '411000', 10.5, 0, 'after the truncate', NULL), "
            "(7, DATE '2026-03-03', '512000', 0, 10.5, NULL, 1.5)",
        )
        await backups.backup("delta", night(2))

        prefix = staging_prefix_of(names)
        s3_settings, credentials = await s3_with_rights(rights, stack, names, monkeypatch)
        async with AsyncExitStack() as clients:
            s3 = await clients.enter_async_context(create_s3_client(s3_settings))
            redshift = s3
            if credentials:  # Redshift reads what the manifest lists with its own role
                copy_role = await assume_worker_role(
                    "redshift-copy", stack, {"backup": names.erp.prefix, "lake": names.erp.prefix}
                )
                redshift = await clients.enter_async_context(s3_client_as(stack, copy_role))
            async with redshift_path(stack, names, s3, redshift) as (source, stager, sink):
                report = await Loading(source, sink).load_all()
                nights = {t: (await source.nights(t))[0] for t in TABLES}
        assert report.ok, report.failed
        assert len(report.applied) == 3 * len(TABLES)

        # one manifest per night, listing exactly that night's parts, in order
        listed = sorted([e["url"] for e in m["entries"]] for m in stager.manifests)
        expected = sorted(
            [f"s3://{stack.s3.backup_bucket}/{p.key}" for p in n.manifest.parts]
            for table_nights in nights.values()
            for n in table_nights
        )
        assert listed == expected
        truncated = [n for n in nights["gl_entries"] if n.day == night(2)]
        assert truncated[0].manifest.plan.reads_changes  # a delta with T rows, not a full
        # removed after each night's transaction
        assert await list_keys(stack.s3, stack.s3.lake_bucket, prefix) == []

        # the same nights through the PostgreSQL path (binary COPY) give the same warehouse
        other = replace(names, raw=f"{names.raw}_pg", models=f"{names.models}_pg")
        try:
            assert (await load_all(loader_settings(stack, other, s3=s3_settings))).ok
            redshift_way = await warehouse_state(stack, names, TABLES)
            postgres_way = await warehouse_state(stack, other, TABLES)
        finally:
            await drop(stack, other.raw, other.models)
        assert redshift_way == postgres_way
        gl = redshift_way["gl_entries"]
        assert [(row[0], row[5]) for row in gl] == [(1, "after the truncate"), (7, None)]
        if credentials:
            await assert_sql_to_redshift_policy_in_force(stack, names, credentials)

    @pytest.mark.slow
    @pytest.mark.timeout(180)
    async def test_a_manifest_left_behind_does_not_fail_the_committed_night(
        self, stack: StackSettings, names: Names, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The worker's policy without s3:DeleteObject: each night still loads and commits,
        the manifest it cannot delete is logged (staging_cleanup_failed) and left for the
        lifecycle rule, instead of the committed night being reported as failed."""
        backups = Backups(stack, names, ("customers",))
        await backups.full()
        local = {"lake": stack.s3.lake_bucket, "backup": stack.s3.backup_bucket}
        policy = moved_policy(
            "sql-to-redshift", local, {"backup": names.erp.prefix, "lake": names.erp.prefix}
        )
        for statement in policy["Statement"]:
            statement["Action"] = [a for a in statement["Action"] if a != "s3:DeleteObject"]
        credentials = await assume_role(stack, policy, name="sql-to-redshift-no-delete")
        s3_settings = use_credentials(monkeypatch, credentials, stack.s3)
        prefix = staging_prefix_of(names)
        async with (
            create_s3_client(s3_settings) as s3,
            create_s3_client(stack.s3) as redshift,
            redshift_path(stack, names, s3, redshift) as (source, _, sink),
        ):
            with capture_logs() as logs:
                report = await Loading(source, sink).load_all()
            heads = await sink.heads()
        assert report.ok, report.failed
        assert len(report.applied) == 1
        assert heads["customers"].day == night(0)
        failed = [e for e in logs if e["event"] == "staging_cleanup_failed"]
        assert len(failed) == 1
        assert "AccessDenied" in failed[0]["error"]
        assert failed[0]["keys"] == await list_keys(stack.s3, stack.s3.lake_bucket, prefix)
