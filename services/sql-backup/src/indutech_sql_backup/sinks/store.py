"""The backup bucket: layout, plans, verified-part records and manifests.

One directory per (table, day, kind), as DESIGN.md fixes it::

    {prefix}sql-server/{database}.{schema}.{table}/year=YYYY/month=MM/day=DD/{full|delta}/
        _plan.json                 the chunks and the source position (written first)
        part-{chunk:05d}.parquet   one per chunk; deterministic name, overwritten on redo
        _parts/part-{chunk:05d}.json   the part's record once uploaded and verified
        _manifest.json             written last, once every part is verified

Only a directory with ``_manifest.json`` is trusted (restore, the next delta,
sql-to-redshift); a plan or parts without it are an unfinished run that the
next run resumes: chunks whose record names the same plan are skipped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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
        "SQL Server after a TRUNCATE): its parts replace the table on restore",
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


def now_utc() -> datetime:
    return datetime.now(UTC)


def dumps(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()
