"""SQL written once, in PostgreSQL's dialect, and rendered for Redshift by sqlglot.

Every statement of sql-to-redshift (the ledger, the staging and MERGE of ``erp_raw``, the
models of ``erp``) is written as PostgreSQL and runs as written locally. For Redshift it is
parsed and generated again by sqlglot (``TEXT`` becomes ``VARCHAR(MAX)``, ``BYTEA``
``VARBYTE`` …), and a ``CREATE TABLE`` gets the table's distribution and sort keys. The
statements are also written in the subset both engines take (``MERGE`` with one matched and
one not-matched branch, no ``ON CONFLICT``, no arrays, ``DELETE`` rather than
``TRUNCATE``, which commits on Redshift), so the rendering only changes spellings. What
Redshift spells differently in a way sqlglot cannot know (locks, ``COPY``) is chosen by the
callers. No Redshift runs here: the unit tests parse every Redshift rendering with sqlglot's
Redshift dialect.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import sqlglot
from sqlglot import expressions as exp

Dialect = Literal["postgres", "redshift"]


@dataclass(frozen=True)
class Layout:
    """How Redshift spreads and sorts a table (ignored on PostgreSQL)."""

    distkey: str | None = None
    sortkey: tuple[str, ...] = ()
    diststyle_all: bool = False


def render(sql: str, dialect: Dialect, layout: Layout | None = None) -> str:
    """``sql`` (PostgreSQL) for ``dialect``; ``layout`` applies to a CREATE TABLE."""
    if dialect == "postgres":
        return sql
    return _redshift(sql, layout)


@lru_cache(maxsize=1024)
def _redshift(sql: str, layout: Layout | None) -> str:
    tree = sqlglot.parse_one(sql, read="postgres", error_level=sqlglot.ErrorLevel.RAISE)
    if layout is not None:
        if not isinstance(tree, exp.Create):
            raise ValueError("a layout applies to CREATE TABLE only")
        tree.set("properties", _properties(layout))
    return tree.sql(dialect="redshift", unsupported_level=sqlglot.ErrorLevel.RAISE)


def _properties(layout: Layout) -> exp.Properties:
    properties: list[exp.Expression] = []
    if layout.diststyle_all:
        properties.append(exp.DistStyleProperty(this=exp.Var(this="ALL")))
    elif layout.distkey:
        properties.append(exp.DistKeyProperty(this=exp.to_identifier(layout.distkey)))
    if layout.sortkey:
        properties.append(
            exp.SortKeyProperty(this=[exp.to_identifier(c) for c in layout.sortkey], compound=True)
        )
    return exp.Properties(expressions=properties)
