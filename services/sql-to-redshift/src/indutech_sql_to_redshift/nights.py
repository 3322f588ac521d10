"""Which nights of a table to apply next, in order; a missing night stops the table.

A *night* is one complete run of sql-backup for one table and day (a ``Manifest``: a full,
a delta, or a delta that re-read the whole table). The warehouse's ledger holds the *head*
of each table: the last night applied and the source position it ended at. The next night
is the first run after the head, in (day, full-before-delta) order, that either continues
it (a delta whose ``position_from`` is the head's ``position_to``) or replaces everything
(a full). Anything else means a night is missing in between, and the table stops there
with an error naming it: a night is never skipped, so the warehouse never silently loses a
day of changes.

Pure logic: the runs come from ``sources.backup``, the head from ``sinks.warehouse``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from indutech_common.schemas.sql_backup import Kind, Manifest
from indutech_sql_to_redshift.errors import MissingNightError, NoBackupError

_KIND_ORDER: dict[str, int] = {"full": 0, "delta": 1}


@dataclass(frozen=True)
class Night:
    """A complete run of one table found in the backup: its manifest and where it is."""

    manifest: Manifest
    url: str

    @property
    def day(self) -> date:
        return self.manifest.plan.day

    @property
    def kind(self) -> Kind:
        return self.manifest.plan.kind

    @property
    def replaces(self) -> bool:
        """Holds the whole table (a full, or a delta that re-read it)."""
        return self.kind == "full" or self.manifest.plan.snapshot

    @property
    def order(self) -> tuple[date, int]:
        return (self.day, _KIND_ORDER[self.kind])

    def __str__(self) -> str:
        snapshot = " (re-snapshot)" if self.manifest.plan.snapshot else ""
        return f"{self.day} {self.kind}{snapshot}"


@dataclass(frozen=True)
class Unfinished:
    """A run with a plan but no ``_manifest.json`` (not finished, or its manifest is lost)."""

    day: date
    kind: Kind
    url: str

    def __str__(self) -> str:
        return f"{self.day} {self.kind} ({self.url}: a plan without _manifest.json)"


@dataclass(frozen=True)
class Head:
    """What the warehouse holds of a table: the last night applied."""

    day: date
    kind: Kind
    position_to: str
    manifest: str

    @property
    def order(self) -> tuple[date, int]:
        return (self.day, _KIND_ORDER[self.kind])


@dataclass(frozen=True)
class Pending:
    """The nights to apply in order, and the missing night that stops the table after them
    (``gap``: raise it once they are applied; None when the chain is whole)."""

    nights: list[Night]
    gap: MissingNightError | None = None


def pending(
    table: str,
    nights: Sequence[Night],
    head: Head | None,
    *,
    until: date | None = None,
    unfinished: Sequence[Unfinished] = (),
) -> Pending:
    """The nights to apply after ``head``, up to ``until`` (inclusive), in order.

    Without a head, the table starts at its earliest full run (so a rebuild replays every
    night the backup holds). Raises ``NoBackupError`` when ``until`` names a day with no
    complete run while the head is before it (before anything is applied). The first run
    that does not continue what precedes it ends the list: the nights before it are applied,
    then ``gap`` names the missing night."""
    usable = sorted((n for n in nights if until is None or n.day <= until), key=lambda n: n.order)
    if (
        until is not None
        and (head is None or head.day < until)
        and not any(n.day == until for n in usable)
    ):
        raise NoBackupError(_no_run_on(table, until, unfinished))
    result: list[Night] = []
    position: str | None = None
    after: tuple[date, int] | None = None
    if head is None:
        fulls = [n for n in usable if n.kind == "full"]
        if not fulls:
            raise NoBackupError(_no_full(table, usable, unfinished))
        result.append(fulls[0])
    else:
        position, after = head.position_to, head.order
    while True:
        if result:
            position, after = result[-1].manifest.position_to, result[-1].order
        later = [n for n in usable if after is None or n.order > after]
        if not later:
            return Pending(result)
        first_day = later[0].day
        same_day = [n for n in later if n.day == first_day]
        following = [n for n in same_day if n.manifest.position_from == position]
        chosen = (
            following[0] if following else next((n for n in same_day if n.kind == "full"), None)
        )
        if chosen is None:
            return Pending(
                result,
                MissingNightError(
                    _gap(
                        table,
                        head=head,
                        applied=result,
                        blocked=later[0],
                        position=position,
                        unfinished=unfinished,
                    )
                ),
            )
        result.append(chosen)


def _no_run_on(table: str, day: date, unfinished: Sequence[Unfinished]) -> str:
    partial = [u for u in unfinished if u.day == day]
    found = "only " + "; ".join(str(u) for u in partial) if partial else "no run of that day at all"
    return (
        f"{table}: no complete backup of {day} ({found}). Nothing was applied. Let sql-backup "
        f"finish that night (sql-backup plan --kind delta --date {day} --table SCHEMA.{table}), "
        "then load again."
    )


def _no_full(table: str, usable: Sequence[Night], unfinished: Sequence[Unfinished]) -> str:
    seen = ", ".join(str(n) for n in usable) or "no complete run"
    partial = "; unfinished: " + "; ".join(str(u) for u in unfinished) if unfinished else ""
    return (
        f"{table}: no complete full backup to start from (found: {seen}{partial}). Take a full "
        f"backup of the table (sql-backup backup --kind full --table SCHEMA.{table}), then load "
        "again."
    )


def _gap(
    table: str,
    *,
    head: Head | None,
    applied: Sequence[Night],
    blocked: Night,
    position: str | None,
    unfinished: Sequence[Unfinished],
) -> str:
    last_day = applied[-1].day if applied else (head.day if head else None)
    last = str(applied[-1]) if applied else (f"{head.day} {head.kind}" if head else "none")
    between = [
        u for u in unfinished if (last_day is None or u.day >= last_day) and u.day <= blocked.day
    ]
    missing = (
        "; ".join(str(u) for u in between)
        if between
        else f"no run between {last_day} and {blocked.day} continues it"
    )
    ready = f" (after applying the {len(applied)} night(s) before it)" if applied else ""
    return (
        f"{table}: a night is missing after {last}: the {blocked} run starts at source position "
        f"{blocked.manifest.position_from!r}, but {last} ended at {position!r}. Missing: "
        f"{missing}. The table stops at {last}{ready}; nothing after it is applied. Back up "
        f"the missing night (or take a new full backup of {table}), then load again."
    )
