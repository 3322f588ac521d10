"""A corrupt part, a missing manifest, a missing night: a clear error, and the warehouse keeps
the last night whole (nothing of the bad night is applied)."""

from __future__ import annotations

import pytest

from indutech_common.s3 import create_s3_client
from indutech_common.schemas.sql_backup import PLAN_FILE, BackupDir
from indutech_sql_to_redshift.cli import opened
from indutech_sql_to_redshift.errors import CorruptPartError, MissingNightError, NoBackupError
from tests.integration.sql_to_redshift.conftest import (
    Backups,
    Names,
    loader_settings,
    night,
    warehouse_state,
)
from tests.support.stack import StackSettings

TABLES = ("customers", "products")


def run_dir(stack: StackSettings, names: Names, table: str, n: int) -> BackupDir:
    return BackupDir(
        prefix=names.erp.prefix,
        database=stack.erp.database,
        schema=names.erp.schema,
        table=table,
        day=night(n),
        kind="full" if n == 0 else "delta",
    )


class TestBadBackups:
    @pytest.mark.slow
    @pytest.mark.timeout(300)
    async def test_corrupt_part_missing_manifest_and_missing_night(
        self, stack: StackSettings, names: Names
    ) -> None:
        backups = Backups(stack, names, TABLES)
        settings = loader_settings(stack, names, tables=TABLES)
        bucket = stack.s3.backup_bucket
        await backups.full()
        for n in (1, 2, 3):
            await backups.delta(n)
        async with opened(settings) as loading:
            assert len(await loading.load_table("customers", until=night(1))) == 2
        before = await warehouse_state(stack, names, ("customers",), models=("dim_customer",))

        async with create_s3_client(stack.s3) as s3:
            # 1. a part of night 2 differs from its manifest: nothing of night 2 is applied
            part = run_dir(stack, names, "customers", 2).part(0)
            original = await (await s3.get_object(Bucket=bucket, Key=part))["Body"].read()
            await s3.put_object(Bucket=bucket, Key=part, Body=original[:-40] + b"\0" * 40)
            async with opened(settings) as loading:
                with pytest.raises(CorruptPartError, match=r"part-00000\.parquet differs from"):
                    await loading.load_table("customers")
            assert (
                await warehouse_state(stack, names, ("customers",), models=("dim_customer",))
                == before
            )
            await s3.put_object(Bucket=bucket, Key=part, Body=original)

            # 2. night 2's manifest is missing: asking for night 2 applies nothing
            manifest = run_dir(stack, names, "customers", 2).manifest
            kept = await (await s3.get_object(Bucket=bucket, Key=manifest))["Body"].read()
            await s3.delete_object(Bucket=bucket, Key=manifest)
            async with opened(settings) as loading:
                with pytest.raises(
                    NoBackupError, match=rf"no complete backup of {night(2)}.*{PLAN_FILE}"
                ):
                    await loading.load_table("customers", until=night(2))
            assert (
                await warehouse_state(stack, names, ("customers",), models=("dim_customer",))
                == before
            )

            # 3. ... so night 3 cannot follow night 1: the table stops, naming night 2
            async with opened(settings) as loading:
                with pytest.raises(MissingNightError, match=rf"{night(2)} delta .*{PLAN_FILE}"):
                    await loading.load_table("customers")
                report = await loading.load_all()
            assert isinstance(report.failed["customers"], MissingNightError)
            assert [a.table for a in report.applied] == ["products"] * 4, "other tables go on"
            assert (
                await warehouse_state(stack, names, ("customers",), models=("dim_customer",))
                == before
            )

            # the manifest back: the nights apply in order and the table catches up
            await s3.put_object(Bucket=bucket, Key=manifest, Body=kept)
        async with opened(settings) as loading:
            applied = await loading.load_table("customers")
            assert [a.night.day for a in applied] == [night(2), night(3)]
            statuses = await loading.verify()
        assert all(s.ok for s in statuses), statuses
