"""Totals of rows and money (exact decimals): from Arrow parts, from SQL rows, compared."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa

from indutech_sql_to_redshift.reconcile import Totals, arrow_totals, difference

PART = pa.table(
    {
        "_op": ["U", "D", "U", "T"],
        "id": [1, 2, 3, None],
        "amount": pa.array(
            [Decimal("9999999999999999.99"), None, Decimal("0.01"), None], pa.decimal128(18, 2)
        ),
    }
)


class TestTotals:
    def test_a_delta_counts_its_upserts_only_exactly(self) -> None:
        totals = arrow_totals(PART, ["amount"], upserts_only=True)
        assert totals == Totals(2, {"amount": Decimal("10000000000000000.00")})
        assert arrow_totals(PART, ["amount"], upserts_only=False).rows == 4

    def test_parts_add_up_and_round_trip_through_the_ledger(self) -> None:
        one = Totals(2, {"amount": Decimal("1.10")})
        two = Totals(3, {"amount": Decimal("2.25")})
        assert one + two == Totals(5, {"amount": Decimal("3.35")})
        assert Totals.from_json((one + two).to_json()) == one + two
        assert Totals.from_json(None) is None

    def test_sql_sums_of_nothing_are_zero(self) -> None:
        assert Totals.of_row([0, None], ["amount"]) == Totals(0, {"amount": Decimal(0)})

    def test_difference_names_what_differs(self) -> None:
        expected = Totals(2, {"amount": Decimal("1.10"), "qty": Decimal(3)})
        found = Totals(3, {"amount": Decimal("1.11"), "qty": Decimal(3)})
        assert (
            difference(expected, found) == "rows 3 instead of 2; sum(amount) 1.11 instead of 1.10"
        )
        assert difference(expected, expected) is None
