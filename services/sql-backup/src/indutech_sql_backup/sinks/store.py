"""The backup bucket: layout, plans, verified-part records and manifests.

One directory per (table, day, kind), as DESIGN.md fixes it::

    {prefix}sql-server/{database}.{schema}.{table}/year=YYYY/month=MM/day=DD/{full|delta}/
        _plan.json                 the chunks and the source position (written first)
        part-{chunk:05d}.parquet   one per chunk; deterministic name, overwritten on redo
        _parts/part-{chunk:05d}.json   the part's record once uploaded and verified
        _manifest.json             written last, once every part is verified
        _failed/part-{chunk:05d}.json  a chunk given up on (dead-lettered): no manifest until
                                   a rerun redoes it

Only a directory with ``_manifest.json`` is trusted (restore, the next delta,
sql-to-redshift); a plan or parts without it are an unfinished run that the
next run resumes: chunks whose record names the same plan are skipped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from indutech_common.s3 import upload_multipart
from indutech_sql_backup.dialects import Column, TableInfo, TableRef

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

Kind = Literal["full", "delta"]
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
MANIFEST = "_manifest.json"
ANNOUNCED = "_announced.json"
PLAN = "_plan.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Model):
    name: str
    source_type: str
    nullable: bool
    arrow_type: str | None = None


class ChunkSpec(_Model):
    chunk: int
    lo: str | None = Field(description="exclusive lower bound of the chunk column (None: -inf)")
    hi: str | None = Field(description="inclusive upper bound (None: +inf)")


class Plan(_Model):
    version: int = 1
    plan_id: str
    kind: Kind
    database: str
    dialect: str
    schema_name: str
    table: str
    day: date
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...]
    key_from: str
    watermark: str | None
    chunk_column: str
    chunks: tuple[ChunkSpec, ...]
    position_from: str | None = Field(description="where this run starts (the previous end)")
    position_to: str = Field(description="the source position when planned: the next start")
    created_at: datetime
    snapshot: bool = Field(
        default=False,
        description="a delta that re-reads the whole table (the source lost its changes, e.g. "
        "SQL Server after a TRUNCATE, or its columns changed): its parts replace the table "
        "on restore, with this plan's columns",
    )
    snapshot_reason: str | None = Field(
        default=None, description="why a delta re-reads the whole table (None: not said)"
    )

    @property
    def reads_changes(self) -> bool:
        """Parts hold changes with an ``_op`` column (a delta that is not a re-snapshot)."""
        return self.kind == "delta" and not self.snapshot

    @property
    def ref(self) -> TableRef:
        return TableRef(self.schema_name, self.table)

    def table_info(self) -> TableInfo:
        return TableInfo(
            ref=self.ref,
            columns=tuple(Column(c.name, c.source_type, c.nullable) for c in self.columns),
            key=self.key,
            watermark=self.watermark,
            key_from=self.key_from,
        )


class PartRecord(_Model):
    """A part uploaded and verified: S3 checked its SHA-256 on arrival."""

    plan_id: str
    chunk: int
    key: str
    rows: int
    bytes: int
    checksum: str = Field(description="content checksum of the rows (indutech_sql_backup.checksum)")
    sha256: str = Field(description="SHA-256 of the Parquet object")
    ops: dict[str, int] = Field(default_factory=dict)
    arrow_schema: tuple[ColumnSpec, ...] = ()
    seconds: float = 0.0


class FailureRecord(_Model):
    """A chunk given up on after ``attempts`` failures: the run has no manifest until a rerun
    (``sql-backup plan`` or ``backup`` again) redoes it."""

    plan_id: str
    chunk: int
    attempts: int
    error: str
    failed_at: datetime
    dead_letter_topic: str | None = None


class Manifest(_Model):
    version: int = 1
    plan: Plan
    parts: tuple[PartRecord, ...]
    rows: int
    bytes: int
    completed_at: datetime

    @property
    def position_from(self) -> str | None:
        return self.plan.position_from

    @property
    def position_to(self) -> str:
        return self.plan.position_to


class BackupDir:
    """The keys of one (table, day, kind) directory."""

    def __init__(self, *, prefix: str, database: str, ref: TableRef, day: date, kind: Kind):
        self.ref = ref
        self.day = day
        self.kind = kind
        self.table_root = f"{prefix}sql-server/{database}.{ref.schema}.{ref.name}/"
        self.base = f"{self.table_root}year={day:%Y}/month={day:%m}/day={day:%d}/{kind}/"

    @classmethod
    def of(cls, prefix: str, plan: Plan) -> BackupDir:
        return cls(
            prefix=prefix, database=plan.database, ref=plan.ref, day=plan.day, kind=plan.kind
        )

    def part(self, chunk: int) -> str:
        return f"{self.base}part-{chunk:05d}.parquet"

    def record(self, chunk: int) -> str:
        return f"{self.base}_parts/part-{chunk:05d}.json"

    def failure(self, chunk: int) -> str:
        return f"{self.base}_failed/part-{chunk:05d}.json"

    @property
    def failures_prefix(self) -> str:
        return self.base + "_failed/"

    @property
    def plan(self) -> str:
        return self.base + PLAN

    @property
    def manifest(self) -> str:
        return self.base + MANIFEST

    @property
    def announced(self) -> str:
        """Written after sql.backup-completed.v1 was sent for this directory's manifest."""
        return self.base + ANNOUNCED


def _is_missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("NoSuchKey", "404", "NotFound")


class BackupStore:
    def __init__(self, client: S3Client, *, bucket: str, prefix: str) -> None:
        self.s3 = client
        self.bucket = bucket
        self.prefix = prefix

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def get_bytes(self, key: str) -> bytes | None:
        try:
            response = await self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        async with response["Body"] as body:
            return await body.read()

    async def put_json(self, key: str, body: BaseModel, *, create_only: bool = False) -> bool:
        """Write a JSON document; with ``create_only`` an existing one wins (returns False)."""
        data = body.model_dump_json(indent=1).encode()
        extra: dict[str, str] = {"IfNoneMatch": "*"} if create_only else {}
        try:
            await self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType="application/json",
                ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                **extra,  # type: ignore[arg-type]
            )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if create_only and status in (409, 412):
                return False
            raise
        return True

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
                self.s3,
                bucket=self.bucket,
                key=key,
                body=path,
                part_bytes=part_bytes,
                checksum_sha256=True,
                ContentType=PARQUET_CONTENT_TYPE,
            )
            return
        data = await asyncio.to_thread(path.read_bytes)
        await self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=PARQUET_CONTENT_TYPE,
            ChecksumSHA256=base64.b64encode(sha256).decode(),
        )

    async def plan(self, key: str) -> Plan | None:
        raw = await self.get_bytes(key)
        return Plan.model_validate_json(raw) if raw is not None else None

    async def manifest(self, key: str) -> Manifest | None:
        raw = await self.get_bytes(key)
        return Manifest.model_validate_json(raw) if raw is not None else None

    async def records(self, directory: BackupDir, plan_id: str) -> dict[int, PartRecord]:
        """The verified parts of this plan (records of another plan are ignored)."""
        found: dict[int, PartRecord] = {}
        for key in await self.list_keys(directory.base + "_parts/"):
            raw = await self.get_bytes(key)
            if raw is None:
                continue
            record = PartRecord.model_validate_json(raw)
            if record.plan_id == plan_id:
                found[record.chunk] = record
        return found

    async def failures(self, directory: BackupDir, plan_id: str) -> dict[int, FailureRecord]:
        """The chunks of this plan given up on (markers of another plan are ignored)."""
        found: dict[int, FailureRecord] = {}
        for key in await self.list_keys(directory.failures_prefix):
            raw = await self.get_bytes(key)
            if raw is not None:
                failure = FailureRecord.model_validate_json(raw)
                if failure.plan_id == plan_id:
                    found[failure.chunk] = failure
        return found

    async def delete_keys(self, keys: Iterable[str]) -> None:
        for key in keys:
            await self.s3.delete_object(Bucket=self.bucket, Key=key)

    async def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return sorted(keys)

    async def manifests(self, database: str, ref: TableRef) -> list[Manifest]:
        """Every complete run of a table, oldest first (by day, full before delta)."""
        root = BackupDir(
            prefix=self.prefix, database=database, ref=ref, day=date(2000, 1, 1), kind="full"
        ).table_root
        found: list[Manifest] = []
        for key in await self.list_keys(root):
            if key.endswith("/" + MANIFEST):
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
                    f"before {plan.day}, and take a full backup of {plan.ref.qualified} (deltas "
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


def dumps(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()
