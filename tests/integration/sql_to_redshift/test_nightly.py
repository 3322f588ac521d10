"""Three nightly cycles of the demo ERP through the real sql-backup and sql-to-redshift: the
facts equal the source joined the same way, the SCD2 history shows each change once with
its validity range, and a rerun changes nothing."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from indutech_sql_to_redshift.cli import opened
from indutech_sql_to_redshift.models import OPEN_END
from tests.integration.sql_to_redshift.conftest import (
    DAY0,
    Backups,
    Names,
    fetch,
    load_all,
    loader_settings,
    night,
    warehouse_state,
)
from tests.support.stack import StackSettings

TABLES = ("customers", "gl_entries", "invoices", "order_lines", "orders", "products")
CUSTOMER_TRACKED = "code, name, email, country, credit_limit, is_active"
PRODUCT_TRACKED = "sku, name, unit_price, weight_kg, discontinued"

LINES_SOURCE = (
    "SELECT l.order_id, l.line_no, o.order_date, o.status, o.currency, o.customer_id, c.code, "
    "c.name, c.country, l.product_id, p.sku, p.name, l.qty, l.unit_price, l.amount "
    "FROM {s}.order_lines AS l JOIN {s}.orders AS o ON o.id = l.order_id "
    "LEFT JOIN {s}.customers AS c ON c.id = o.customer_id "
    "LEFT JOIN {s}.products AS p ON p.id = l.product_id ORDER BY 1, 2"
)
LINES_FACT = (
    "SELECT order_id, line_no, order_date, order_status, currency, customer_id, customer_code, "
    "customer_name, region, product_id, product_sku, product_name, qty, unit_price, amount "
    "FROM {m}.fact_order_line ORDER BY 1, 2"
)
INVOICES_SOURCE = (
    "SELECT i.id, i.order_id, i.issued_at, i.due_date, i.amount, i.paid, o.order_date, "
    "o.currency, o.customer_id, c.name, c.country FROM {s}.invoices AS i "
    "LEFT JOIN {s}.orders AS o ON o.id = i.order_id "
    "LEFT JOIN {s}.customers AS c ON c.id = o.customer_id ORDER BY 1"
)
INVOICES_FACT = (
    "SELECT invoice_id, order_id, issued_at, due_date, amount, paid, order_date, currency, "
    "customer_id, customer_name, region FROM {m}.fact_invoice ORDER BY 1"
)
GL_SOURCE = (
    "SELECT account, CAST(date_trunc('month', entry_date) AS date), sum(debit), sum(credit), "
    "sum(debit) - sum(credit), count(*) FROM {s}.gl_entries GROUP BY 1, 2 ORDER BY 1, 2"
)
GL_MODEL = (
    "SELECT account, period, debit, credit, balance, entries FROM {m}.gl_balance ORDER BY 1, 2"
)

Versions = dict[Any, list[list[Any]]]


def scd2_expected(
    snapshots: list[tuple[date, dict[Any, tuple[Any, ...]]]],
) -> list[tuple[Any, ...]]:
    """The versions an SCD2 dimension must hold after these nights: a version opens when a
    row is new or its tracked columns differ, and closes when it changes or goes."""
    versions: Versions = {}
    current: dict[Any, list[Any]] = {}
    for day, rows in snapshots:
        for key in list(current):
            if key not in rows or rows[key] != tuple(current[key][0]):
                current.pop(key)[2] = day
        for key, values in rows.items():
            if key not in current:
                version = [values, day, date.fromisoformat(OPEN_END)]
                versions.setdefault(key, []).append(version)
                current[key] = version
    return sorted(
        (
            (key, *values, start, end, end == date.fromisoformat(OPEN_END))
            for key, history in versions.items()
            for values, start, end in history
        ),
        key=_order,
    )


def _order(version: tuple[Any, ...]) -> tuple[Any, ...]:
    """Key, valid_from, valid_to: unique per version, and never NULL."""
    return (version[0], version[-3], version[-2])


async def tracked(stack: StackSettings, schema: str, table: str, columns: str) -> dict[Any, Any]:
    rows = await fetch(stack, f"SELECT id, {columns} FROM {schema}.{table}", source=True)  # noqa: S608
    return {r[0]: tuple(r[1:]) for r in rows}


async def dimension(
    stack: StackSettings, names: Names, name: str, key: str, columns: str
) -> list[tuple[Any, ...]]:
    rows = await fetch(
        stack,
        f"SELECT {key}, {columns}, valid_from, valid_to, is_current "  # noqa: S608
        f"FROM {names.models}.{name}",
    )
    return sorted(rows, key=_order)


async def assert_models_equal_source(stack: StackSettings, names: Names, when: date) -> None:
    s, m = names.erp.schema, names.models
    for source_sql, model_sql in (
        (LINES_SOURCE, LINES_FACT),
        (INVOICES_SOURCE, INVOICES_FACT),
        (GL_SOURCE, GL_MODEL),
    ):
        expected = await fetch(stack, source_sql.format(s=s), source=True)
        assert expected, source_sql
        assert await fetch(stack, model_sql.format(m=m)) == expected, f"{model_sql} on {when}"
    staged = await fetch(stack, f"SELECT * FROM {names.raw}.order_lines ORDER BY 1, 2")  # noqa: S608
    assert staged == await fetch(stack, f"SELECT * FROM {s}.order_lines ORDER BY 1, 2", source=True)  # noqa: S608
    # every fact row points at its customer's and product's current version
    dangling = await fetch(
        stack,
        f"SELECT count(*) FROM {m}.fact_order_line AS f LEFT JOIN {m}.dim_customer AS c "  # noqa: S608
        f"ON c.customer_sk = f.customer_sk AND c.is_current LEFT JOIN {m}.dim_product AS p "
        "ON p.product_sk = f.product_sk AND p.is_current "
        "WHERE c.customer_sk IS NULL OR p.product_sk IS NULL",
    )
    assert dangling == [(0,)]


class TestThreeNights:
    @pytest.mark.slow
    @pytest.mark.timeout(420)
    async def test_facts_follow_the_source_and_scd2_keeps_each_change_once(
        self, stack: StackSettings, names: Names
    ) -> None:
        backups = Backups(stack, names, TABLES)
        settings = loader_settings(stack, names)
        await backups.full()
        customers = [(DAY0, await tracked(stack, names.erp.schema, "customers", CUSTOMER_TRACKED))]
        products = [(DAY0, await tracked(stack, names.erp.schema, "products", PRODUCT_TRACKED))]
        report = await load_all(settings)
        assert report.ok, report.failed
        assert {(a.table, a.night.kind) for a in report.applied} == {(t, "full") for t in TABLES}
        await assert_models_equal_source(stack, names, DAY0)
        for n in (1, 2, 3):
            await backups.delta(n)
            customers.append(
                (night(n), await tracked(stack, names.erp.schema, "customers", CUSTOMER_TRACKED))
            )
            products.append(
                (night(n), await tracked(stack, names.erp.schema, "products", PRODUCT_TRACKED))
            )
            report = await load_all(settings)
            assert report.ok, report.failed
            assert sorted(a.table for a in report.applied) == sorted(TABLES)
            assert {a.night.day for a in report.applied} == {night(n)}
            await assert_models_equal_source(stack, names, night(n))

        history = await dimension(stack, names, "dim_customer", "customer_id", CUSTOMER_TRACKED)
        assert history == scd2_expected(customers)
        changed = [v for v in history if v[-3] != DAY0]
        assert changed, "the demo's nights change customers: the history must show it"
        history = await dimension(stack, names, "dim_product", "product_id", PRODUCT_TRACKED)
        assert history == scd2_expected(products)
        # product 2 was deleted and issued again on night 2: its old version ends that night
        two = [v for v in history if v[0] == 2]
        assert [(v[-3], v[-2]) for v in two] == [
            (DAY0, night(2)),
            (night(2), date.fromisoformat(OPEN_END)),
        ]

        # a rerun, of everything or of one night, changes nothing
        before = await warehouse_state(stack, names, TABLES)
        again = await load_all(settings)
        assert again.ok
        assert again.applied == []
        async with opened(settings) as loading:
            assert await loading.load_table("orders", until=night(2)) == []
            statuses = await loading.verify()
        assert all(s.ok for s in statuses), statuses
        assert await warehouse_state(stack, names, TABLES) == before
        assert len(before["ledger"]) == 4 * len(TABLES)
