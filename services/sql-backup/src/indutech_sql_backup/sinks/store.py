"""The backup bucket: sql-backup's reads and writes of the layout in
``indutech_common.schemas.sql_backup`` (plans, parts, part records, failure markers,
manifests), and the checks of a chain of runs before a restore.

Only a directory with ``_manifest.json`` is trusted (restore, the next delta,
sql-to-redshift); a plan or parts without it are an unfinished run that the
next run resumes: chunks whose record names the same plan are skipped.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from indutech_common.s3 import (
    PARQUET_CONTENT_TYPE,
    JsonObjectStore,
    upload_multipart,
)
from indutech_common.schemas.sql_backup import (
    BackupDir,
    FailureRecord,
    Manifest,
    PartRecord,
    Plan,
    is_manifest_key,
    table_root,
)
from indutech_sql_backup.dialects import TableRef

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


class BackupStore(JsonObjectStore):
    """The backup bucket: JSON objects through ``JsonObjectStore`` (SHA-256 checked, a missing
    key is None, create-only writes), Parquet parts, and the layout's reads."""

    def __init__(self, client: S3Client, *, bucket: str, prefix: str) -> None:
        super().__init__(client, bucket=bucket)
        self.prefix = prefix

    async def put_part(
        self,
        key: str,
        path: Path,
        *,
        size: int,
        sha256: bytes,
        multipart_threshold: int,
        part_bytes: int,
    ) -> None:
        """Upload a part file. Below ``multipart_threshold`` one PUT with the file's SHA-256
        (S3 recomputes it and refuses a body that differs); from it on, a multipart upload
        read from the file one part at a time, each part with its own SHA-256 that S3
        verifies the same way (aborted on any failure). The whole file's SHA-256 is in the
        part record either way."""
        if size >= multipart_threshold:
            await upload_multipart(
                self.client,
                bucket=self.bucket,
                key=key,
                body=path,
                part_bytes=part_bytes,
                checksum_sha256=True,
                ContentType=PARQUET_CONTENT_TYPE,
            )
            return
        data = await asyncio.to_thread(path.read_bytes)
        await self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=PARQUET_CONTENT_TYPE,
            # The digest the part record keeps, taken while the file was written (not
            # sha256_checksum(data), a second hash of what was read): a file that changed in
            # between is refused by S3 instead of stored under a record that does not match.
            ChecksumSHA256=base64.b64encode(sha256).decode(),
        )

    async def plan(self, key: str) -> Plan | None:
        return await self.get(key, Plan)

    async def manifest(self, key: str) -> Manifest | None:
        return await self.get(key, Manifest)

    async def records(self, directory: BackupDir, plan_id: str) -> dict[int, PartRecord]:
        """The verified parts of this plan (records of another plan are ignored)."""
        found: dict[int, PartRecord] = {}
        for key in await self.list_keys(directory.parts_prefix):
            record = await self.get(key, PartRecord)
            if record is not None and record.plan_id == plan_id:
                found[record.chunk] = record
        return found

    async def failures(self, directory: BackupDir, plan_id: str) -> dict[int, FailureRecord]:
        """The chunks of this plan given up on (markers of another plan are ignored)."""
        found: dict[int, FailureRecord] = {}
        for key in await self.list_keys(directory.failures_prefix):
            failure = await self.get(key, FailureRecord)
            if failure is not None and failure.plan_id == plan_id:
                found[failure.chunk] = failure
        return found

    async def delete_keys(self, keys: Iterable[str]) -> None:
        for key in keys:
            await self.delete(key)

    async def manifests(self, database: str, ref: TableRef) -> list[Manifest]:
        """Every complete run of a table, oldest first (by day, full before delta)."""
        root = table_root(self.prefix, database, ref.schema, ref.name)
        found: list[Manifest] = []
        for key in await self.list_keys(root):
            if is_manifest_key(key):
                manifest = await self.manifest(key)
                if manifest is not None:
                    found.append(manifest)
        found.sort(key=lambda m: (m.plan.day, m.plan.kind != "full", m.plan.created_at))
        return found


def chain(manifests: list[Manifest], *, until: date | None = None) -> list[Manifest]:
    """The newest full run up to ``until`` and every delta continuing it, in order.

    A delta continues a run when it starts exactly where that run ended
    (``position_from == position_to``): a gap or a fork is never followed.
    """
    usable = [m for m in manifests if until is None or m.plan.day <= until]
    fulls = [m for m in usable if m.plan.kind == "full"]
    if not fulls:
        return []
    result = [fulls[-1]]
    deltas = [m for m in usable if m.plan.kind == "delta" and m.plan.day >= fulls[-1].plan.day]
    while True:
        following = [d for d in deltas if d.position_from == result[-1].position_to]
        if not following:
            return result
        result.append(following[0])


class _ColumnLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def source_type(self) -> str: ...
    @property
    def nullable(self) -> bool: ...


def _column_text(column: _ColumnLike) -> str:
    return f"{column.source_type}{'' if column.nullable else ' NOT NULL'}"


@dataclass(frozen=True)
class SchemaDrift:
    """How a table's columns and key differ between two moments (before → after)."""

    added: tuple[str, ...]
    dropped: tuple[str, ...]
    changed: tuple[str, ...]  # "name: type → type"
    key_before: tuple[str, ...]
    key_after: tuple[str, ...]

    def describe(self) -> str:
        said = []
        if self.added:
            said.append(f"added {', '.join(self.added)}")
        if self.dropped:
            said.append(f"dropped {', '.join(self.dropped)}")
        if self.changed:
            said.append(f"changed {'; '.join(self.changed)}")
        if self.key_before != self.key_after:
            said.append(f"key ({', '.join(self.key_before)}) → ({', '.join(self.key_after)})")
        return ", ".join(said)


def schema_drift(
    before: Sequence[_ColumnLike],
    key_before: Sequence[str],
    after: Sequence[_ColumnLike],
    key_after: Sequence[str],
) -> SchemaDrift | None:
    """What changed in columns (name, type, nullability) and key, or None. The order of the
    columns does not matter: every read and load names its columns."""
    old = {c.name: _column_text(c) for c in before}
    new = {c.name: _column_text(c) for c in after}
    drift = SchemaDrift(
        added=tuple(c.name for c in after if c.name not in old),
        dropped=tuple(c.name for c in before if c.name not in new),
        changed=tuple(
            f"{name}: {old[name]} → {new[name]}"
            for name in new
            if name in old and old[name] != new[name]
        ),
        key_before=tuple(key_before),
        key_after=tuple(key_after),
    )
    if drift.added or drift.dropped or drift.changed or drift.key_before != drift.key_after:
        return drift
    return None


def restore_base(runs: Sequence[Manifest]) -> int:
    """Index of the run a restore starts from: the last full or re-snapshot of the chain
    (each replaces everything before it, columns included)."""
    return max(i for i, m in enumerate(runs) if m.plan.kind == "full" or m.plan.snapshot)


def chain_problems(runs: Sequence[Manifest]) -> list[str]:
    """Why a chain cannot be restored column for column: a delta whose columns or key
    differ from the run it continues (backups made before drift was detected at plan
    time), or a part whose stored columns are not its plan's. Empty when sound."""
    problems: list[str] = []
    base: Manifest | None = None
    for run in runs:
        plan = run.plan
        if plan.kind == "full" or plan.snapshot:
            base = run
        elif base is not None:
            drift = schema_drift(base.plan.columns, base.plan.key, plan.columns, plan.key)
            if drift is not None:
                problems.append(
                    f"the delta of {plan.day} has other columns than the {base.plan.kind} of "
                    f"{base.plan.day} it continues ({drift.describe()}): restore as of a day "
                    f"before {plan.day}, and take a full backup of {plan.qualified} (deltas "
                    "after a schema change are re-snapshots since this was detected)"
                )
        expected = (["_op"] if plan.reads_changes else []) + [c.name for c in plan.columns]
        for part in run.parts:
            stored = [c.name for c in part.arrow_schema]
            if stored and stored != expected:
                problems.append(
                    f"{part.key} holds columns {stored}, its plan lists {expected}: the table "
                    "changed while the chunk ran; take a full backup"
                )
    return problems


def now_utc() -> datetime:
    return datetime.now(UTC)
