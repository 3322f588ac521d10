# ruff: noqa: S608 - SQL built from quoted identifiers and integers only, never outside input
"""A demo ERP for the postgres stand-in: six tables, realistic types, and day-by-day changes.

``create`` builds customers, products, orders, order_lines (composite key),
invoices and gl_entries in one schema at a chosen scale (``scale=1``: 100
customers, 1,000 orders, ~3,000 lines …), generated server-side with
``generate_series`` so a large scale loads quickly. Money is DECIMAL (with the
extremes of its range), notes are LOBs of up to ~70 KB with non-ASCII text,
some columns are NULL, timestamps carry microseconds. ``change_day(d)`` then
inserts, updates (including NULL ↔ value) and deletes rows, as a business day would.

The tables are a plain ERP: change capture (row_version + deletes log) is sql-backup's
(``sql-backup prepare-source``, or ``PostgresDialect.install_change_capture`` handed in
as ``change_capture``), never copied here. Dev-only: no worker imports this module.

    python -m indutech_devtools.erp create --schema erp_demo --scale 10 | psql "$ERP_URL"
    python -m indutech_devtools.erp change --schema erp_demo --day 1 | psql "$ERP_URL"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "customers": (
        "id bigint PRIMARY KEY, code varchar(20) NOT NULL, name text NOT NULL, "
        "email varchar(120), country char(2), credit_limit numeric(15,2), "
        "is_active boolean NOT NULL, external_id uuid, created_at timestamptz NOT NULL, "
        "notes text, logo bytea",
        ("id",),
    ),
    "products": (
        "id integer PRIMARY KEY, sku varchar(32) NOT NULL, name text NOT NULL, "
        "unit_price numeric(12,4) NOT NULL, weight_kg numeric(10,3), discontinued boolean "
        "NOT NULL, description text",
        ("id",),
    ),
    "orders": (
        "id bigint PRIMARY KEY, customer_id bigint NOT NULL, order_date date NOT NULL, "
        "status varchar(16) NOT NULL, total numeric(18,2) NOT NULL, currency char(3) NOT NULL, "
        "updated_at timestamp(6) NOT NULL, notes text",
        ("id",),
    ),
    "order_lines": (
        "order_id bigint NOT NULL, line_no integer NOT NULL, product_id integer NOT NULL, "
        "qty numeric(12,3) NOT NULL, unit_price numeric(12,4) NOT NULL, "
        "amount numeric(18,2) NOT NULL, PRIMARY KEY (order_id, line_no)",
        ("order_id", "line_no"),
    ),
    "invoices": (
        "id bigint PRIMARY KEY, order_id bigint NOT NULL, issued_at timestamptz NOT NULL, "
        "due_date date, amount numeric(18,2) NOT NULL, paid boolean NOT NULL, pdf bytea",
        ("id",),
    ),
    "gl_entries": (
        "id bigint PRIMARY KEY, entry_date date NOT NULL, account varchar(10) NOT NULL, "
        "debit numeric(19,4) NOT NULL, credit numeric(19,4) NOT NULL, description text, "
        "fx_rate double precision",
        ("id",),
    ),
}


def _q(name: str) -> str:
    """A PostgreSQL quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def _orders(s: str, first: str, last: str) -> list[str]:
    """Orders ids [first, last] with ~3 lines, an invoice and two GL entries each."""
    return [
        f"INSERT INTO {s}.orders SELECT i, 1 + i % {_CUSTOMERS}, "
        "date '2025-01-01' + (i % 400), "
        "(ARRAY['new','confirmed','shipped','invoiced'])[1 + i % 4], "
        "CASE WHEN i = 1 THEN 9999999999999999.99 WHEN i = 2 THEN -0.01 "
        "ELSE round(((i::bigint * 7919) % 1000003) / 7.0, 2) END, "
        "(ARRAY['EUR','USD','PLN','MXN'])[1 + i % 4], "
        "timestamp '2025-01-01 00:00:00' + i * interval '1 minute 0.000123 seconds', "
        "CASE WHEN i % 6 = 0 THEN NULL WHEN i % 50 = 0 THEN repeat('Lieferschein ' || i || "
        "' — ä ö ü ß ', 400) ELSE 'order ' || i END "
        f"FROM generate_series({first}, {last}) AS i",
        f"INSERT INTO {s}.order_lines SELECT o, l, 1 + (o * l) % {_PRODUCTS}, "
        "round(((o + l) % 97) / 4.0 + 0.125, 3), round(((o * 31 + l) % 100000) / 100.0, 4), "
        "round(((o + l) % 97) / 4.0 * ((o * 31 + l) % 100000) / 100.0, 2) "
        f"FROM generate_series({first}, {last}) AS o, generate_series(1, 1 + o % 5) AS l",
        f"INSERT INTO {s}.invoices SELECT i, i, "
        "timestamptz '2025-01-02 08:00:00+00' + i * interval '61 seconds 0.5 milliseconds', "
        "CASE WHEN i % 9 = 0 THEN NULL ELSE date '2025-02-01' + (i % 400) END, "
        "round(((i::bigint * 7919) % 1000003) / 7.0, 2), i % 3 = 0, "
        "CASE WHEN i % 25 = 0 THEN decode(repeat(md5(i::text), 300), 'hex') END "
        f"FROM generate_series({first}, {last}) AS i",
        f"INSERT INTO {s}.gl_entries SELECT i, date '2025-01-01' + (i / 2) % 400, "
        "(ARRAY['411000','512000','601000','706000'])[1 + i % 4], "
        "CASE WHEN i % 2 = 0 THEN round((i * 13.3333) % 100000, 4) ELSE 0 END, "
        "CASE WHEN i % 2 = 1 THEN round((i * 13.3333) % 100000, 4) ELSE 0 END, "
        "CASE WHEN i % 4 = 0 THEN NULL ELSE 'entry ' || i END, "
        "CASE WHEN i % 3 = 0 THEN NULL ELSE 1 + (i % 1000) / 1000.0 END "
        f"FROM generate_series(2 * {first} - 1, 2 * {last}) AS i",
    ]


_CUSTOMERS = "{customers}"
_PRODUCTS = "{products}"


def _fill(statements: list[str], scale: int) -> list[str]:
    return [
        s.replace(_CUSTOMERS, str(100 * scale)).replace(_PRODUCTS, str(50 * scale))
        for s in statements
    ]


def table_keys() -> dict[str, tuple[str, ...]]:
    """Each table's key columns (what change capture needs)."""
    return {name: key for name, (_, key) in TABLES.items()}


def create_statements(schema: str, *, scale: int, change_capture: Sequence[str] = ()) -> list[str]:
    """The schema (dropped first), its tables and their rows. ``change_capture`` runs after
    the tables are created and before the rows go in (so every row has its row_version)."""
    s = _q(schema)
    statements = [f"DROP SCHEMA IF EXISTS {s} CASCADE", f"CREATE SCHEMA {s}"]
    statements += [f"CREATE TABLE {s}.{_q(name)} ({ddl})" for name, (ddl, _) in TABLES.items()]
    statements += change_capture
    statements += [
        f"INSERT INTO {s}.customers SELECT i, 'C' || lpad(i::text, 8, '0'), "
        "'Customer ' || i || ' ' || md5(i::text), "
        "CASE WHEN i % 5 = 0 THEN NULL ELSE 'c' || i || '@example.com' END, "
        "(ARRAY['FR','DE','PL','MX','PT'])[1 + i % 5], "
        "CASE WHEN i % 13 = 0 THEN NULL ELSE round((i * 37.13) % 100000, 2) END, i % 7 <> 0, "
        "md5('c' || i)::uuid, "
        "timestamptz '2025-01-01 00:00:00+00' + i * interval '37 minutes 0.123457 seconds', "
        "CASE WHEN i % 10 = 0 THEN repeat('Note ' || i || ' — é ü 漢字 ', 2000 + i % 500) "
        "WHEN i % 3 = 0 THEN NULL ELSE 'short note ' || i END, "
        "CASE WHEN i % 4 = 0 THEN decode(md5(i::text) || md5((i + 1)::text), 'hex') END "
        "FROM generate_series(1, {customers}) AS i",
        f"INSERT INTO {s}.products SELECT i, 'SKU-' || i, 'Product ' || i, "
        "CASE WHEN i = 1 THEN 99999999.9999 ELSE round(((i * 7907) % 100000) / 100.0, 4) END, "
        "CASE WHEN i % 6 = 0 THEN NULL ELSE round(i * 0.125, 3) END, i % 9 = 0, "
        "CASE WHEN i % 2 = 0 THEN 'Description of ' || i END "
        "FROM generate_series(1, {products}) AS i",
    ]
    statements += _orders(s, "1", str(1000 * scale))
    return _fill(statements, scale)


def change_statements(schema: str, *, day: int, scale: int) -> list[str]:
    """One business day: new orders, updates (NULL ↔ value too) and deletes."""
    s = _q(schema)
    base = 1000 * scale
    new = 50 * scale
    first, last = base + (day - 1) * new + 1, base + day * new
    statements = _orders(s, str(first), str(last))
    statements += [
        f"UPDATE {s}.orders SET status = 'shipped', total = total + 0.01, "
        f"updated_at = updated_at + interval '1 day' WHERE id % 17 = {day % 17} AND id > 2",
        f"UPDATE {s}.customers SET email = CASE WHEN email IS NULL THEN 'new' || id || "
        f"'@example.com' END, credit_limit = credit_limit * 2, notes = CASE WHEN id % 2 = 0 "
        f"THEN repeat('changed on day {day} ✓ ', 3000) END WHERE id % 11 = {day % 11}",
        f"UPDATE {s}.invoices SET paid = NOT paid WHERE id % 13 = {day % 13}",
        f"DELETE FROM {s}.order_lines WHERE order_id % 23 = {day % 23} AND line_no > 1",
        f"DELETE FROM {s}.invoices WHERE id % 29 = {day % 29}",
        f"DELETE FROM {s}.gl_entries WHERE id % 31 = {day % 31}",
        # A key deleted and inserted again on the same day.
        f"DELETE FROM {s}.products WHERE id = {day}",
        f"INSERT INTO {s}.products VALUES ({day}, 'SKU-R{day}', 'Reissued {day}', 1.0001, NULL, "
        "false, NULL)",
    ]
    return _fill(statements, scale)


def main(argv: list[str] | None = None) -> int:
    """Print the SQL of the demo ERP (``create``) or of one business day (``change``)."""
    parser = argparse.ArgumentParser(
        prog="python -m indutech_devtools.erp",
        description="Print the SQL of a demo ERP for the postgres stand-in (pipe it into psql). "
        "Change capture is not included: install it with 'sql-backup prepare-source "
        "--table SCHEMA.TABLE …' before taking deltas.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser("create", help="the schema (dropped first), tables and rows")
    change = commands.add_parser("change", help="one business day of inserts, updates, deletes")
    change.add_argument("--day", type=int, required=True, help="day N (1, 2, …)")
    for command in (create, change):
        command.add_argument("--schema", default="erp_demo")
        command.add_argument("--scale", type=int, default=1, help="1: 100 customers, 1,000 orders")
    args = parser.parse_args(argv)
    if args.command == "create":
        statements = create_statements(args.schema, scale=args.scale)
    else:
        statements = change_statements(args.schema, day=args.day, scale=args.scale)
    sys.stdout.write("".join(f"{statement};\n" for statement in statements))
    return 0


if __name__ == "__main__":
    sys.exit(main())
