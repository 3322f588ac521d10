"""Reconciliation: row counts and money totals (exact decimals), backup against warehouse.

Inside each night's transaction, before anything is committed:

- a full or re-snapshot: the rows and the sum of every decimal column over the night's
  Parquet parts equal those of the staged table after the copy;
- a delta: the rows and sums of the night's upserts (``U``) in its parts equal those of
  the staged table's rows with the upserted keys after the ``MERGE`` (every upsert landed
  with its values).

A difference raises ``ReconciliationError``: the night is rolled back. The totals of the
whole staged table after each night are written to the ledger (``totals``, JSON with the
decimals as text), exposed as metrics, and ``verify`` compares the table's totals now with
the ledger's last (a table changed behind the loader's back shows there).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from indutech_common.schemas.sql_backup import CHANGE_OP_COLUMN


@dataclass(frozen=True)
class Totals:
    """Rows and, per decimal ("money") column, the exact sum of its non-NULL values."""

    rows: int = 0
    money: dict[str, Decimal] = field(default_factory=dict)

    def __add__(self, other: Totals) -> Totals:
        names = set(self.money) | set(other.money)
        return Totals(
            self.rows + other.rows,
            {
                n: self.money.get(n, Decimal(0)) + other.money.get(n, Decimal(0))
                for n in sorted(names)
            },
        )

    def to_json(self) -> str:
        return json.dumps({"rows": self.rows, "money": {k: str(v) for k, v in self.money.items()}})

    @classmethod
    def from_json(cls, text: str | None) -> Totals | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(int(data["rows"]), {k: Decimal(v) for k, v in data["money"].items()})

    @classmethod
    def of_row(cls, row: Sequence[Any], columns: Sequence[str]) -> Totals:
        """From ``SELECT COUNT(*), SUM(c1), … `` (a NULL sum: no values, 0)."""
        return cls(
            int(row[0]),
            {
                c: Decimal(v) if v is not None else Decimal(0)
                for c, v in zip(columns, row[1:], strict=True)
            },
        )

    def describe(self) -> str:
        money = ", ".join(f"{k} {v}" for k, v in self.money.items())
        return f"{self.rows:,} rows" + (f", {money}" if money else "")


def arrow_totals(data: pa.Table, columns: Sequence[str], *, upserts_only: bool) -> Totals:
    """The totals of a part (a delta's: its ``U`` rows only)."""
    if upserts_only:
        data = data.filter(pc.equal(data.column(CHANGE_OP_COLUMN), "U"))
    money = {}
    for name in columns:
        total = pc.sum(data.column(name)).as_py()
        money[name] = Decimal(total) if total is not None else Decimal(0)
    return Totals(data.num_rows, money)


def difference(expected: Totals, found: Totals) -> str | None:
    """What differs, in words; None when equal."""
    problems = []
    if expected.rows != found.rows:
        problems.append(f"rows {found.rows:,} instead of {expected.rows:,}")
    for name, value in expected.money.items():
        got = found.money.get(name, Decimal(0))
        if got != value:
            problems.append(f"sum({name}) {got} instead of {value}")
    return "; ".join(problems) or None
