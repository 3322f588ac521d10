"""Loading tables night by night: what ``run``, ``load``, ``rebuild`` and ``verify`` share.

``load_table`` plans a table's pending nights from its head (``nights.pending``) and applies
them one transaction each; a night planned on a head that moved meanwhile (another loader)
is planned again. ``load_all`` does every table, night by night in day order, so the models
move forward one night at a time. A table that fails (a corrupt part, a missing night)
stops where it is and the other tables go on; the failures are returned, each with the
message of what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

import structlog

from indutech_sql_to_redshift.errors import FencedError, LoadError, NoBackupError
from indutech_sql_to_redshift.nights import Head, Night, pending
from indutech_sql_to_redshift.reconcile import Totals
from indutech_sql_to_redshift.sinks.warehouse import Applied, WarehouseSink
from indutech_sql_to_redshift.sources.backup import BackupSource

_log = structlog.get_logger(__name__)
FENCED_RETRIES = 3


@dataclass
class LoadReport:
    applied: list[Applied] = field(default_factory=list)
    failed: dict[str, LoadError] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class TableStatus:
    """``verify``'s view of one table."""

    table: str
    head: Head | None
    pending: tuple[Night, ...]
    problem: str | None
    totals: Totals | None
    ledger_totals: Totals | None

    @property
    def ok(self) -> bool:
        return (
            self.problem is None
            and not self.pending
            and self.head is not None
            and self.totals == self.ledger_totals
        )


Progress = Callable[[Applied], None]


class Loading:
    def __init__(
        self,
        source: BackupSource,
        sink: WarehouseSink,
        *,
        tables: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.configured = tuple(tables)
        self.progress = progress

    async def tables(self) -> list[str]:
        return list(self.configured) or await self.source.tables()

    async def _plan(
        self, table: str, head: Head | None, *, until: date | None, start: date | None = None
    ) -> tuple[list[Night], LoadError | None]:
        since = head.day if head else None
        nights, unfinished = await self.source.nights(table, since=since)
        if head is None and start is not None:
            # rebuild --from: begin at the newest full on or before that day
            bases = [n for n in nights if n.kind == "full" and n.day <= start]
            if bases:
                nights = [n for n in nights if n.order >= bases[-1].order]
        planned = pending(table, nights, head, until=until, unfinished=unfinished)
        return planned.nights, planned.gap

    async def load_table(self, table: str, *, until: date | None = None) -> list[Applied]:
        """Every pending night of ``table`` up to ``until``, in order; raises the first
        ``LoadError`` (after applying the nights before it)."""
        applied: list[Applied] = []
        for _ in range(FENCED_RETRIES):
            head = (await self.sink.heads()).get(table)
            nights, gap = await self._plan(table, head, until=until)
            try:
                for night in nights:
                    applied.append(await self._apply(table, night, head))
                    head = Head(night.day, night.kind, night.manifest.position_to, night.url)
            except FencedError as exc:
                _log.warning("load_fenced", table=table, error=str(exc))
                continue
            if gap is not None:
                raise gap
            return applied
        raise FencedError(f"{table}: the ledger kept moving under this loader; try again")

    async def _apply(self, table: str, night: Night, head: Head | None) -> Applied:
        done = await self.sink.apply(table, night, expected=head, read_part=self.source.part)
        _log.info(
            "night_applied",
            table=table,
            night=str(night),
            backup_rows=done.backup_rows,
            table_rows=done.table_rows,
            models=list(done.models),
            seconds=done.seconds,
        )
        if self.progress:
            self.progress(done)
        return done

    async def load_all(
        self,
        *,
        until: date | None = None,
        start: date | None = None,
        only: Sequence[str] = (),
    ) -> LoadReport:
        """Every table's pending nights, in day order across tables."""
        report = LoadReport()
        heads = await self.sink.heads()
        queue: list[tuple[tuple[date, int], str, Night]] = []
        gaps: dict[str, LoadError] = {}
        for table in only or await self.tables():
            try:
                nights, gap = await self._plan(table, heads.get(table), until=until, start=start)
            except LoadError as exc:
                report.failed[table] = exc
                continue
            if gap is not None:
                gaps[table] = gap
            queue += [(n.order, table, n) for n in nights]
        queue.sort(key=lambda item: (item[0], item[1]))
        for _, table, night in queue:
            if table in report.failed:
                continue  # a table stops at its first failure
            try:
                report.applied.append(await self._apply(table, night, heads.get(table)))
            except LoadError as exc:
                report.failed[table] = exc
                continue
            heads[table] = Head(night.day, night.kind, night.manifest.position_to, night.url)
        for table, gap in gaps.items():
            report.failed.setdefault(table, gap)
        return report

    async def rebuild(self, *, start: date | None = None) -> LoadReport:
        """Everything from the backup again: the staged tables, ledger and models dropped
        (one transaction), then every night from the first full (or the newest full on or
        before ``start``)."""
        tables = await self.tables()
        await self.sink.forget(tables)
        return await self.load_all(start=start, only=tables)

    async def verify(self) -> list[TableStatus]:
        """Per table: the head, the nights not yet applied (or what blocks them), and the
        staged rows and money totals now against the ledger's after the head's night."""
        heads = await self.sink.heads()
        statuses = []
        for table in await self.tables():
            head = heads.get(table)
            problem: str | None = None
            nights: list[Night] = []
            try:
                nights, gap = await self._plan(table, head, until=None)
                problem = str(gap) if gap else None
            except NoBackupError as exc:
                problem = str(exc)
            totals, recorded = await self.sink.current_totals(table) if head else (None, None)
            if problem is None and totals != recorded:
                problem = (
                    f"{table} holds {totals.describe() if totals else 'nothing'} but its ledger "
                    f"recorded {recorded.describe() if recorded else 'nothing'} after "
                    f"{head.day if head else '-'}: the table was changed outside sql-to-redshift. "
                    f"Run sql-to-redshift rebuild to make it the backup's again."
                )
            statuses.append(TableStatus(table, head, tuple(nights), problem, totals, recorded))
        return statuses
