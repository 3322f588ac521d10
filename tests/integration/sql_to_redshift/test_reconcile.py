# ruff: noqa: S608 - SQL of identifiers the test made itself
"""Reconciliation: every night's rows and money totals are checked against the backup inside
its transaction (a load that changed a value is rolled back), the ledger keeps the table's
exact totals, and ``verify`` finds a table changed behind the loader's back."""

from __future__ import annotations

from decimal import Decimal

import pytest

from indutech_common.warehouse import connect_warehouse
from indutech_sql_to_redshift.cli import opened
from indutech_sql_to_redshift.errors import ReconciliationError
from indutech_sql_to_redshift.reconcile import Totals
from tests.integration.sql_to_redshift.conftest import (
    Backups,
    Names,
    fetch,
    loader_settings,
    night,
    warehouse_state,
)
from tests.support.stack import StackSettings


async def execute(stack: StackSettings, *statements: str) -> None:
    connection = await connect_warehouse(stack.warehouse)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


class TestReconciliation:
    @pytest.mark.slow
    @pytest.mark.timeout(240)
    async def test_a_changed_value_is_refused_and_verify_finds_tampering(
        self, stack: StackSettings, names: Names
    ) -> None:
        backups = Backups(stack, names, ("order_lines",))
        settings = loader_settings(stack, names, tables=("order_lines",))
        await backups.full()
        await backups.delta(1)
        lines = f"{names.raw}.order_lines"
        async with opened(settings) as loading:
            await loading.load_table("order_lines", until=night(0))
            # a warehouse that changes what it is given (here a trigger): the night is refused
            await execute(
                stack,
                f"CREATE FUNCTION {names.raw}.skew() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN NEW.amount := NEW.amount + 0.01; RETURN NEW; END $$",
                f"CREATE TRIGGER skew BEFORE INSERT OR UPDATE ON {lines} "
                f"FOR EACH ROW EXECUTE FUNCTION {names.raw}.skew()",
            )
            before = await warehouse_state(stack, names, ("order_lines",), models=())
            with pytest.raises(ReconciliationError, match=r"sum\(amount\) .* instead of"):
                await loading.load_table("order_lines")
            assert await warehouse_state(stack, names, ("order_lines",), models=()) == before
            await execute(stack, f"DROP TRIGGER skew ON {lines}")
            assert len(await loading.load_table("order_lines")) == 1

            # the ledger's totals are the source's, exactly
            source = await fetch(
                stack,
                f"SELECT count(*), sum(qty), sum(unit_price), sum(amount) "
                f"FROM {names.erp.schema}.order_lines",
                source=True,
            )
            [status] = await loading.verify()
            assert status.ok, status
            assert status.totals == Totals(
                source[0][0],
                {"qty": source[0][1], "unit_price": source[0][2], "amount": source[0][3]},
            )

            # a table changed outside the loader: verify says so, naming it
            await execute(stack, f"UPDATE {lines} SET amount = amount + 1 WHERE line_no = 1")
            [status] = await loading.verify()
        assert not status.ok
        assert status.problem is not None
        assert "changed outside sql-to-redshift" in status.problem
        assert status.totals is not None
        assert status.ledger_totals is not None
        assert status.totals.money["amount"] > status.ledger_totals.money["amount"] > Decimal(0)
