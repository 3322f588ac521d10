"""The warehouse SQL, written once in PostgreSQL and rendered for Redshift. No Redshift runs
here: every Redshift rendering is parsed with sqlglot's Redshift dialect."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import expressions as exp

from indutech_sql_to_redshift.dialect import Dialect
from indutech_sql_to_redshift.errors import SchemaDriftError
from indutech_sql_to_redshift.models import (
    MODELS,
    create_statements,
    lock_statement,
    models_for,
)
from indutech_sql_to_redshift.sinks.sql import RawTable, Statements, sql_type
from indutech_sql_to_redshift.sinks.staging import copy_manifest

ROLE = "arn:aws:iam::123456789012:role/indutech-redshift-copy"
LINES = RawTable.of(
    "order_lines",
    pa.schema(
        [
            ("_op", pa.string()),
            ("order_id", pa.int64()),
            ("line_no", pa.int32()),
            ("amount", pa.decimal128(18, 2)),
            ("note", pa.string()),
        ]
    ),
    ("order_id", "line_no"),
    {"order_id": False, "line_no": False, "amount": False, "note": True},
)


def statements(dialect: Dialect) -> list[str]:
    st = Statements("erp_raw", dialect)
    return [
        *st.create_ledger(),
        st.select_head(),
        st.select_heads(),
        st.advance_head(),
        st.insert_head(),
        st.insert_ledger(),
        st.select_ledger(),
        *st.forget(),
        st.create_table(LINES),
        st.drop_table("order_lines"),
        st.empty_table("order_lines"),
        st.count("order_lines"),
        st.create_stage(LINES),
        st.clear_range(LINES, "order_id", lo=True, hi=True),
        st.clear_range(LINES, "order_id", lo=False, hi=True),
        *st.apply_delta(LINES),
        st.duplicate_key(LINES),
        st.merge(LINES),
        st.drop_stage(LINES),
        *create_statements("erp", dialect),
        *(s for m in MODELS for s in m.statements(raw="erp_raw", erp="erp", dialect=dialect)),
        *(m.empty("erp", dialect) for m in MODELS),
    ]


def parse(sql: str, dialect: str) -> exp.Expr:
    return sqlglot.parse_one(sql, read=dialect, error_level=sqlglot.ErrorLevel.RAISE)


class TestRedshift:
    def test_every_statement_parses_in_the_redshift_dialect(self) -> None:
        """Ledger, staging, MERGE, truncate markers, every model: valid Redshift to sqlglot."""
        rendered = statements("redshift")
        assert len(rendered) > 40
        for sql in rendered:
            assert not isinstance(parse(sql, "redshift"), exp.Command), sql

    def test_the_lock_and_copy_are_redshift_s_own(self) -> None:
        st = Statements("erp_raw", "redshift")
        assert st.lock() == "LOCK erp_raw._load_state"
        copy = st.rs_copy_manifest(
            "s2r_stage", manifest_uri="s3://lake/warehouse-staging/x/m.json", iam_role=ROLE
        )
        assert copy.endswith("FORMAT AS PARQUET MANIFEST")
        parse(copy, "redshift")
        with pytest.raises(ValueError, match="s3://"):
            st.rs_copy_manifest("t", manifest_uri="s3://lake/x' ; DROP", iam_role=ROLE)

    def test_the_lock_takes_no_argument_on_redshift(self) -> None:
        """asyncpg sends exactly the arguments a statement has: none to Redshift's LOCK."""
        assert Statements("erp_raw", "redshift").lock_args("orders") == ()
        postgres = Statements("erp_raw", "postgres")
        assert postgres.lock().count("$1") == len(postgres.lock_args("orders")) == 1

    def test_the_model_lock_is_redshift_s_lock_of_the_models_in_one_order(self) -> None:
        """Redshift's LOCK takes no mode; sqlglot keeps LOCK as a command, so its tables
        are parsed one by one: each a Redshift table of erp, in MODELS order whatever the
        order asked (no two loaders lock in a cycle)."""
        sql = lock_statement(["fact_invoice", "dim_customer", "fact_order_line"], "erp", "redshift")
        tree = parse(sql, "redshift")
        assert isinstance(tree, exp.Command)
        assert tree.this == "LOCK"
        names = [n.strip() for n in tree.expression.name.split(",")]
        tables = [sqlglot.parse_one(n, into=exp.Table, read="redshift") for n in names]
        assert [(t.db, t.name) for t in tables] == [
            ("erp", "dim_customer"),
            ("erp", "fact_order_line"),
            ("erp", "fact_invoice"),
        ]
        assert sql == "LOCK erp.dim_customer, erp.fact_order_line, erp.fact_invoice"

    def test_the_model_lock_refuses_what_is_not_a_model(self) -> None:
        with pytest.raises(ValueError, match="orders"):
            lock_statement(["orders"], "erp", "redshift")
        with pytest.raises(ValueError, match="none given"):
            lock_statement([], "erp", "postgres")
        with pytest.raises(ValueError, match="identifier"):
            lock_statement(["gl_balance"], "erp; DROP", "postgres")

    def test_the_stage_has_exactly_the_delta_parts_columns(self) -> None:
        """Redshift's COPY of Parquet fills a table with the file's columns, by position:
        the stage is ``_op`` then the columns, nothing the parts lack."""
        stage = parse(Statements("erp_raw", "redshift").create_stage(LINES), "redshift")
        columns = [c.name for c in stage.find_all(exp.ColumnDef)]
        assert columns == ["_op", "order_id", "line_no", "amount", "note"]

    def test_copy_manifest_lists_each_part_mandatory_with_its_length(self) -> None:
        """The manifest file's JSON as Redshift reads it for Parquet (content_length
        is required there)."""
        body = copy_manifest(
            [
                ("s3://backup/sql-server/erp.dbo.orders/part-00000.parquet", 1234),
                ("s3://backup/sql-server/erp.dbo.orders/part-00001.parquet", 99),
            ]
        )
        assert json.loads(body) == {
            "entries": [
                {
                    "url": "s3://backup/sql-server/erp.dbo.orders/part-00000.parquet",
                    "mandatory": True,
                    "meta": {"content_length": 1234},
                },
                {
                    "url": "s3://backup/sql-server/erp.dbo.orders/part-00001.parquet",
                    "mandatory": True,
                    "meta": {"content_length": 99},
                },
            ]
        }

    def test_nothing_redshift_lacks(self) -> None:
        """No ON CONFLICT, arrays, TRUNCATE (it commits on Redshift), TEXT or BYTEA types."""
        text = "\n".join(statements("redshift"))
        for absent in ("ON CONFLICT", "unnest", "TRUNCATE", " TEXT", "BYTEA", "FOR UPDATE"):
            assert absent not in text
        assert "VARCHAR(MAX)" in text

    def test_merge_has_one_matched_and_one_not_matched_branch(self) -> None:
        """Redshift's MERGE takes exactly these two branches, without conditions."""
        merge = Statements("erp_raw", "redshift").merge(LINES)
        tree = parse(merge, "redshift")
        assert isinstance(tree, exp.Merge)
        whens = list(tree.find_all(exp.When))
        assert len(whens) == 2
        assert all(w.args.get("condition") is None for w in whens)

    def test_every_table_has_its_distribution_and_sort_keys(self) -> None:
        creates = [s for s in statements("redshift") if s.startswith("CREATE TABLE")]
        assert len(creates) == 2 + 1 + len(MODELS)
        for sql in creates:
            assert "SORTKEY" in sql or "DISTSTYLE ALL" in sql, sql
        raw = Statements("erp_raw", "redshift").create_table(LINES)
        assert "DISTKEY(order_id) COMPOUND SORTKEY(order_id, line_no)" in raw
        facts = next(s for s in creates if "fact_order_line" in s)
        assert "DISTKEY(order_id)" in facts


class TestPostgres:
    def test_every_statement_parses_in_the_postgres_dialect(self) -> None:
        for sql in statements("postgres"):
            assert not isinstance(parse(sql, "postgres"), exp.Command), sql

    def test_the_model_lock_conflicts_with_itself_and_lets_readers_read(self) -> None:
        assert lock_statement(["gl_balance", "dim_product"], "erp", "postgres") == (
            "LOCK TABLE erp.dim_product, erp.gl_balance IN SHARE ROW EXCLUSIVE MODE"
        )

    def test_postgres_is_the_text_as_written(self) -> None:
        """One source: the PostgreSQL rendering is the model's SQL itself."""
        model = MODELS[0]
        assert model.statements(raw="r", erp="e", dialect="postgres")[0] == model.refresh[0].format(
            raw="r", erp="e"
        )


class TestShapes:
    def test_arrow_types_map_to_exact_warehouse_types(self) -> None:
        assert sql_type(pa.decimal128(18, 2)) == "NUMERIC(18, 2)"
        assert sql_type(pa.timestamp("us", tz="UTC")) == "TIMESTAMPTZ"
        assert sql_type(pa.dictionary(pa.int32(), pa.string())) == "TEXT"
        with pytest.raises(SchemaDriftError, match="no warehouse type"):
            sql_type(pa.list_(pa.int32()))

    def test_signature_changes_with_a_column(self) -> None:
        wider = RawTable(LINES.name, (*LINES.columns, ("extra", "TEXT", True)), LINES.key)
        assert wider.signature != LINES.signature
        assert "key order_id, line_no" in LINES.signature

    def test_mixed_case_columns_are_refused_by_name(self) -> None:
        with pytest.raises(SchemaDriftError, match=r"orders\.OrderId"):
            RawTable.of("orders", pa.schema([("OrderId", pa.int64())]), ("OrderId",), {})

    def test_identifiers_are_checked(self) -> None:
        with pytest.raises(ValueError, match="identifier"):
            Statements("erp_raw; drop", "postgres")
        with pytest.raises(ValueError, match="identifier"):
            MODELS[0].statements(raw="x;y", erp="erp", dialect="postgres")

    def test_models_wait_for_their_inputs(self) -> None:
        """A fact is refreshed once every table it joins is staged; dims before facts."""
        names = [m.name for m in models_for("customers", {"customers"})]
        assert names == ["dim_customer"]
        every = {"customers", "products", "orders", "order_lines", "invoices"}
        names = [m.name for m in models_for("customers", every)]
        assert names == ["dim_customer", "fact_order_line", "fact_invoice"]
