# ruff: noqa: S608 - SQL built from identifiers checked against IDENTIFIER, never outside input
"""The analytics models of ``erp``: SCD2 dimensions and denormalised facts, SQL written once.

Each model is PostgreSQL SQL over the staged tables (``{raw}``) and the other models
(``{erp}``), rendered for Redshift by ``dialect.render`` with its distribution and sort
keys. A model is refreshed in the same transaction as every night of a table it reads, so
it always matches the staged tables and a rerun of a night changes nothing (the ledger
says it is applied, nothing runs).

- ``dim_customer``, ``dim_product``: SCD type 2. One row per version of a source row:
  surrogate key (MD5 of the natural key, ``valid_from`` and the row hash: the same on
  every rebuild), the tracked columns, ``row_hash`` (MD5 of the tracked columns,
  length-prefixed so no two different rows hash alike by construction), ``valid_from``
  (the night the version was first seen), ``valid_to`` (exclusive; 9999-12-31 while
  current) and ``is_current``. A night closes the current version of every changed or
  deleted row and opens one for every changed or new row: each change once.
- ``fact_order_line``: order lines with their order's, customer's (region = country)
  and product's attributes and the current dimension versions' surrogate keys.
- ``fact_invoice``: invoices with their order's and customer's attributes.
- ``gl_balance``: general-ledger debits, credits and balance by account and month.

Two loaders of different tables (the worker's order_lines, an operator's ``load --table
orders``) both refresh the models reading both tables: each night's refresh first locks
the models it refreshes (``lock_statement``, always in ``MODELS`` order, so two loaders never
wait on each other in a cycle), so one waits for the other's commit and then rebuilds from
it; without it two ``DELETE`` + ``INSERT`` rebuilds at once leave both inserts.

Facts are rebuilt whole in their transaction (``DELETE`` + ``INSERT … SELECT``): simple
and exact; an incremental refresh by changed keys is future work (see the README).
Columns are the demo ERP's (``indutech_devtools.erp``), the shape of InduTech's ERP.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from indutech_sql_to_redshift.config import IDENTIFIER
from indutech_sql_to_redshift.dialect import Dialect, Layout, render

OPEN_END = "9999-12-31"


@dataclass(frozen=True)
class Model:
    """One table of ``erp``: its columns, Redshift layout, inputs and refresh statements."""

    name: str
    columns: tuple[tuple[str, str], ...]
    layout: Layout
    inputs: frozenset[str]
    refresh: tuple[str, ...]
    """PostgreSQL with ``{raw}`` and ``{erp}`` for the schemas; ``$1`` is the night's day."""

    def create(self, erp: str, dialect: Dialect) -> str:
        columns = ", ".join(f"{name} {type_}" for name, type_ in self.columns)
        return render(
            f"CREATE TABLE IF NOT EXISTS {erp}.{self.name} ({columns})", dialect, self.layout
        )

    def statements(self, *, raw: str, erp: str, dialect: Dialect) -> list[str]:
        for schema in (raw, erp):
            if not IDENTIFIER.match(schema):
                raise ValueError(f"{schema!r} is not a lower-case SQL identifier")
        return [render(s.format(raw=raw, erp=erp), dialect) for s in self.refresh]

    def empty(self, erp: str, dialect: Dialect) -> str:
        return render(f"DELETE FROM {erp}.{self.name}", dialect)


@dataclass(frozen=True)
class Tracked:
    """A column an SCD2 dimension keeps history of: its name, type, and whether boolean
    (Redshift cannot cast a boolean to text, so it is hashed through a CASE)."""

    name: str
    sql_type: str
    boolean: bool = False

    def as_text(self, alias: str) -> str:
        column = f"{alias}.{self.name}"
        if self.boolean:
            return f"CASE WHEN {column} THEN 't' WHEN NOT {column} THEN 'f' END"
        return f"CAST({column} AS TEXT)"


def row_hash(alias: str, tracked: tuple[Tracked, ...]) -> str:
    """MD5 of the tracked columns, each as ``length:text`` or ``-`` for NULL."""
    parts = [
        f"COALESCE(CAST(LENGTH({t.as_text(alias)}) AS TEXT) || ':' || {t.as_text(alias)}, '-')"
        for t in tracked
    ]
    return "MD5(" + " || '|' || ".join(parts) + ")"


def scd2(
    name: str,
    *,
    source: str,
    source_key: str,
    natural_key: tuple[str, str],
    surrogate: str,
    tracked: tuple[Tracked, ...],
) -> Model:
    """An SCD type 2 dimension of ``{raw}.source`` keyed by ``source_key``."""
    nk, nk_type = natural_key
    dim = f"{{erp}}.{name}"
    digest = row_hash("c", tracked)
    day = "CAST($1 AS DATE)"
    names = ", ".join(t.name for t in tracked)
    values = ", ".join(f"c.{t.name}" for t in tracked)
    return Model(
        name=name,
        columns=(
            (surrogate, "VARCHAR(32) NOT NULL"),
            (nk, f"{nk_type} NOT NULL"),
            *((t.name, t.sql_type) for t in tracked),
            ("row_hash", "VARCHAR(32) NOT NULL"),
            ("valid_from", "DATE NOT NULL"),
            ("valid_to", "DATE NOT NULL"),
            ("is_current", "BOOLEAN NOT NULL"),
        ),
        layout=Layout(distkey=nk, sortkey=(nk, "valid_from")),
        inputs=frozenset({source}),
        refresh=(
            # versions whose row changed: closed tonight
            f"UPDATE {dim} SET valid_to = {day}, is_current = FALSE "
            f"FROM {{raw}}.{source} AS c WHERE {dim}.{nk} = c.{source_key} "
            f"AND {dim}.is_current AND {dim}.row_hash <> {digest}",
            # versions whose row is gone: closed tonight
            f"UPDATE {dim} SET valid_to = {day}, is_current = FALSE WHERE is_current "
            f"AND {nk} NOT IN (SELECT {source_key} FROM {{raw}}.{source})",
            # rows without a current version (new, or changed just above): opened tonight
            f"INSERT INTO {dim} ({surrogate}, {nk}, {names}, row_hash, valid_from, valid_to, "
            f"is_current) SELECT MD5(CAST(c.{source_key} AS TEXT) || '|' || "
            f"CAST({day} AS TEXT) || '|' || {digest}), c.{source_key}, {values}, {digest}, "
            f"{day}, CAST('{OPEN_END}' AS DATE), TRUE FROM {{raw}}.{source} AS c "
            f"LEFT JOIN {dim} AS d ON d.{nk} = c.{source_key} AND d.is_current "
            f"WHERE d.{nk} IS NULL",
        ),
    )


DIM_CUSTOMER = scd2(
    "dim_customer",
    source="customers",
    source_key="id",
    natural_key=("customer_id", "BIGINT"),
    surrogate="customer_sk",
    tracked=(
        Tracked("code", "TEXT"),
        Tracked("name", "TEXT"),
        Tracked("email", "TEXT"),
        Tracked("country", "TEXT"),
        Tracked("credit_limit", "NUMERIC(15, 2)"),
        Tracked("is_active", "BOOLEAN", boolean=True),
    ),
)

DIM_PRODUCT = scd2(
    "dim_product",
    source="products",
    source_key="id",
    natural_key=("product_id", "INTEGER"),
    surrogate="product_sk",
    tracked=(
        Tracked("sku", "TEXT"),
        Tracked("name", "TEXT"),
        Tracked("unit_price", "NUMERIC(12, 4)"),
        Tracked("weight_kg", "NUMERIC(10, 3)"),
        Tracked("discontinued", "BOOLEAN", boolean=True),
    ),
)

FACT_ORDER_LINE = Model(
    name="fact_order_line",
    columns=(
        ("order_id", "BIGINT NOT NULL"),
        ("line_no", "INTEGER NOT NULL"),
        ("order_date", "DATE"),
        ("order_status", "TEXT"),
        ("currency", "TEXT"),
        ("customer_id", "BIGINT"),
        ("customer_sk", "VARCHAR(32)"),
        ("customer_code", "TEXT"),
        ("customer_name", "TEXT"),
        ("region", "TEXT"),
        ("product_id", "INTEGER"),
        ("product_sk", "VARCHAR(32)"),
        ("product_sku", "TEXT"),
        ("product_name", "TEXT"),
        ("qty", "NUMERIC(12, 3)"),
        ("unit_price", "NUMERIC(12, 4)"),
        ("amount", "NUMERIC(18, 2)"),
    ),
    layout=Layout(distkey="order_id", sortkey=("order_date", "order_id")),
    inputs=frozenset({"order_lines", "orders", "customers", "products"}),
    refresh=(
        "DELETE FROM {erp}.fact_order_line",
        "INSERT INTO {erp}.fact_order_line (order_id, line_no, order_date, order_status, "
        "currency, customer_id, customer_sk, customer_code, customer_name, region, product_id, "
        "product_sk, product_sku, product_name, qty, unit_price, amount) "
        "SELECT l.order_id, l.line_no, o.order_date, o.status, o.currency, o.customer_id, "
        "dc.customer_sk, c.code, c.name, c.country, l.product_id, dp.product_sk, p.sku, p.name, "
        "l.qty, l.unit_price, l.amount FROM {raw}.order_lines AS l "
        "JOIN {raw}.orders AS o ON o.id = l.order_id "
        "LEFT JOIN {raw}.customers AS c ON c.id = o.customer_id "
        "LEFT JOIN {raw}.products AS p ON p.id = l.product_id "
        "LEFT JOIN {erp}.dim_customer AS dc ON dc.customer_id = o.customer_id AND dc.is_current "
        "LEFT JOIN {erp}.dim_product AS dp ON dp.product_id = l.product_id AND dp.is_current",
    ),
)

FACT_INVOICE = Model(
    name="fact_invoice",
    columns=(
        ("invoice_id", "BIGINT NOT NULL"),
        ("order_id", "BIGINT NOT NULL"),
        ("issued_at", "TIMESTAMPTZ"),
        ("due_date", "DATE"),
        ("amount", "NUMERIC(18, 2)"),
        ("paid", "BOOLEAN"),
        ("order_date", "DATE"),
        ("currency", "TEXT"),
        ("customer_id", "BIGINT"),
        ("customer_sk", "VARCHAR(32)"),
        ("customer_name", "TEXT"),
        ("region", "TEXT"),
    ),
    layout=Layout(distkey="order_id", sortkey=("issued_at",)),
    inputs=frozenset({"invoices", "orders", "customers"}),
    refresh=(
        "DELETE FROM {erp}.fact_invoice",
        "INSERT INTO {erp}.fact_invoice (invoice_id, order_id, issued_at, due_date, amount, "
        "paid, order_date, currency, customer_id, customer_sk, customer_name, region) "
        "SELECT i.id, i.order_id, i.issued_at, i.due_date, i.amount, i.paid, o.order_date, "
        "o.currency, o.customer_id, dc.customer_sk, c.name, c.country FROM {raw}.invoices AS i "
        "LEFT JOIN {raw}.orders AS o ON o.id = i.order_id "
        "LEFT JOIN {raw}.customers AS c ON c.id = o.customer_id "
        "LEFT JOIN {erp}.dim_customer AS dc ON dc.customer_id = o.customer_id AND dc.is_current",
    ),
)

GL_BALANCE = Model(
    name="gl_balance",
    columns=(
        ("account", "TEXT NOT NULL"),
        ("period", "DATE NOT NULL"),
        ("debit", "NUMERIC(38, 4) NOT NULL"),
        ("credit", "NUMERIC(38, 4) NOT NULL"),
        ("balance", "NUMERIC(38, 4) NOT NULL"),
        ("entries", "BIGINT NOT NULL"),
    ),
    layout=Layout(diststyle_all=True, sortkey=("period", "account")),
    inputs=frozenset({"gl_entries"}),
    refresh=(
        "DELETE FROM {erp}.gl_balance",
        "INSERT INTO {erp}.gl_balance (account, period, debit, credit, balance, entries) "
        "SELECT account, CAST(DATE_TRUNC('month', entry_date) AS DATE), SUM(debit), "
        "SUM(credit), SUM(debit) - SUM(credit), COUNT(*) FROM {raw}.gl_entries "
        "GROUP BY account, CAST(DATE_TRUNC('month', entry_date) AS DATE)",
    ),
)

# In refresh order: the dimensions before the facts that take their surrogate keys.
MODELS: tuple[Model, ...] = (DIM_CUSTOMER, DIM_PRODUCT, FACT_ORDER_LINE, FACT_INVOICE, GL_BALANCE)


def models_for(table: str, loaded: set[str]) -> list[Model]:
    """The models a night of ``table`` refreshes: those reading it whose every input is
    staged (``loaded``: the tables with a head, ``table`` included)."""
    return [m for m in MODELS if table in m.inputs and m.inputs <= loaded]


def lock_statement(names: Collection[str], erp: str, dialect: Dialect) -> str:
    """Locks the models ``names`` of ``erp`` until the transaction ends, in ``MODELS`` order
    (one order for every loader: no deadlock). PostgreSQL: SHARE ROW EXCLUSIVE, which
    conflicts with itself and with writes but lets readers of the models read. Redshift's
    ``LOCK`` takes no mode (it blocks readers too, until the commit)."""
    if not IDENTIFIER.match(erp):
        raise ValueError(f"{erp!r} is not a lower-case SQL identifier")
    unknown = set(names) - {m.name for m in MODELS}
    if unknown or not names:
        raise ValueError(f"not models of erp: {sorted(unknown) or 'none given'}")
    tables = ", ".join(f"{erp}.{m.name}" for m in MODELS if m.name in names)
    if dialect == "redshift":
        return f"LOCK {tables}"
    return f"LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE"


def create_statements(erp: str, dialect: Dialect) -> list[str]:
    if not IDENTIFIER.match(erp):
        raise ValueError(f"{erp!r} is not a lower-case SQL identifier")
    return [
        render(f"CREATE SCHEMA IF NOT EXISTS {erp}", dialect),
        *(m.create(erp, dialect) for m in MODELS),
    ]
