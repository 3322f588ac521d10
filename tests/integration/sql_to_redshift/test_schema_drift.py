# ruff: noqa: S608 - SQL of identifiers the test made itself
"""Schema drift: a column added at the source arrives with sql-backup's re-snapshot and is
staged (the table re-created, logged); a column a model reads, dropped at the source, stops
that night with an error naming both, and nothing of it is applied. Never a silent drop."""

from __future__ import annotations

import pytest
import structlog.testing

from indutech_sql_to_redshift.errors import ModelError
from tests.integration.sql_to_redshift.conftest import (
    Backups,
    Names,
    fetch,
    load_all,
    loader_settings,
    night,
    run_source_sql,
    warehouse_state,
)
from tests.support.stack import StackSettings


class TestSchemaDrift:
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    async def test_added_column_is_staged_and_a_dropped_model_column_stops_the_night(
        self, stack: StackSettings, names: Names
    ) -> None:
        backups = Backups(stack, names, ("products",))
        settings = loader_settings(stack, names, tables=("products",))
        products = f"{names.erp.schema}.products"
        await backups.full()
        assert (await load_all(settings)).ok
        versions = await fetch(stack, f"SELECT count(*) FROM {names.models}.dim_product")

        await run_source_sql(
            stack,
            f"ALTER TABLE {products} ADD COLUMN color varchar(12)",
            f"UPDATE {products} SET color = 'red' WHERE id % 3 = 0",
        )
        await backups.backup("delta", night(1))
        with structlog.testing.capture_logs() as logs:
            report = await load_all(settings)
        assert report.ok, report.failed
        assert report.applied[0].night.manifest.plan.snapshot
        changed = [e for e in logs if e["event"] == "table_columns_changed"]
        assert len(changed) == 1
        assert "color TEXT" in changed[0]["after"]
        assert "color" not in changed[0]["before"]
        query = "SELECT id, sku, color FROM {} ORDER BY id"
        assert await fetch(stack, query.format(f"{names.raw}.products")) == await fetch(
            stack, query.format(products), source=True
        )
        # a column nobody tracks is not a change of the dimension
        assert await fetch(stack, f"SELECT count(*) FROM {names.models}.dim_product") == versions

        await run_source_sql(stack, f"ALTER TABLE {products} DROP COLUMN weight_kg")
        await backups.backup("delta", night(2))
        before = await warehouse_state(stack, names, ("products",), models=("dim_product",))
        report = await load_all(settings)
        error = report.failed["products"]
        assert isinstance(error, ModelError)
        assert "dim_product" in str(error)
        assert "weight_kg" in str(error)
        assert report.applied == []
        assert await warehouse_state(stack, names, ("products",), models=("dim_product",)) == before
