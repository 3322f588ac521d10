"""The backup sql-backup writes, read only through its contract (``indutech_common.schemas``).

``nights(table)`` lists a table's complete runs (a ``_manifest.json``: the only object a
reader trusts) and its unfinished ones (a ``_plan.json`` without manifest, named in
errors). ``part(record)`` downloads one Parquet part and checks it against its manifest
before anyone uses it: the object's SHA-256, its row count and its columns. A part that is
missing or differs raises ``CorruptPartError``; the caller's transaction then applies
nothing of that night.
"""

from __future__ import annotations

import hashlib
import io
import re
from datetime import date
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from indutech_common.s3 import JsonObjectStore, is_missing, ping_bucket
from indutech_common.schemas.sql_backup import (
    CHANGE_OP_COLUMN,
    MANIFEST_FILE,
    PLAN_FILE,
    Manifest,
    PartRecord,
    table_root,
)
from indutech_sql_to_redshift.errors import CorruptPartError, NoBackupError
from indutech_sql_to_redshift.nights import Night, Unfinished

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# .../year=YYYY/month=MM/day=DD/{full|delta}/<file>
_RUN = re.compile(r"year=(\d{4})/month=(\d{2})/day=(\d{2})/(full|delta)/([^/]+)$")


def _run_of(key: str) -> tuple[date, str, str] | None:
    match = _RUN.search(key)
    if match is None:
        return None
    year, month, day, kind, name = match.groups()
    return date(int(year), int(month), int(day)), kind, name


class BackupSource:
    """A ``Resource`` over the backup bucket: the runs of a table and their verified parts."""

    name = "backup"

    def __init__(self, s3: S3Client, *, bucket: str, prefix: str, database: str, schema: str):
        self._store = JsonObjectStore(s3, bucket=bucket)
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.database = database
        self.schema = schema

    async def ping(self) -> None:
        await ping_bucket(self._s3, self.bucket)

    async def close(self) -> None:
        return None  # the S3 client is the worker's (closed with it)

    def url(self, key: str) -> str:
        return self._store.url(key)

    def root(self, table: str) -> str:
        return table_root(self.prefix, self.database, self.schema, table)

    async def tables(self) -> list[str]:
        """Every table of the schema that has a backup folder (complete or not)."""
        root = f"{self.prefix}sql-server/{self.database}.{self.schema}."
        paginator = self._s3.get_paginator("list_objects_v2")
        names: set[str] = set()
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=root, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"][len(root) :].rstrip("/"))
        return sorted(names)

    async def nights(
        self, table: str, *, since: date | None = None
    ) -> tuple[list[Night], list[Unfinished]]:
        """The complete runs of ``table`` (from ``since`` on) and the unfinished ones."""
        keys = await self._store.list_keys(self.root(table))
        manifests: dict[tuple[date, str], str] = {}
        plans: dict[tuple[date, str], str] = {}
        for key in keys:
            run = _run_of(key)
            if run is None:
                continue
            day, kind, name = run
            if name == MANIFEST_FILE:
                manifests[(day, kind)] = key
            elif name == PLAN_FILE:
                plans[(day, kind)] = key
        nights = []
        for (day, _), key in sorted(manifests.items()):
            if since is not None and day < since:
                continue
            manifest = await self._store.get(key, Manifest)
            if manifest is None:  # deleted between the listing and the read
                continue
            nights.append(Night(manifest, self.url(key)))
        unfinished = [
            Unfinished(day=day, kind="full" if kind == "full" else "delta", url=self.url(key))
            for (day, kind), key in sorted(plans.items())
            if (day, kind) not in manifests and (since is None or day >= since)
        ]
        return nights, unfinished

    async def night(self, url: str) -> Night:
        """The run an announcement names (its manifest URL)."""
        key = url.removeprefix(f"s3://{self.bucket}/")
        manifest = await self._store.get(key, Manifest)
        if manifest is None:
            raise NoBackupError(
                f"{url} does not exist: the announced run's manifest is gone. Run sql-backup's "
                "verify for that table and day, then load again."
            )
        return Night(manifest, url)

    async def part(self, manifest: Manifest, record: PartRecord) -> pa.Table:
        """One part, checked against its manifest before use (SHA-256, rows, columns)."""
        url = self.url(record.key)
        try:
            response = await self._s3.get_object(Bucket=self.bucket, Key=record.key)
            async with response["Body"] as body:
                data = await body.read()
        except ClientError as exc:
            if is_missing(exc):
                raise CorruptPartError(
                    f"{url} is missing, but the manifest of {manifest.plan.qualified} on "
                    f"{manifest.plan.day} lists it. Nothing of that night was applied. Run "
                    "sql-backup verify for the table; take a new backup of that night if the part "
                    "is lost."
                ) from None
            raise
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.sha256:
            raise CorruptPartError(
                f"{url} differs from its manifest (SHA-256 {digest[:16]}…, the manifest says "
                f"{record.sha256[:16]}…). Nothing of {manifest.plan.qualified} on "
                f"{manifest.plan.day} was applied. Run sql-backup verify for the table; restore "
                "the object from its version history or take a new backup of that night."
            )
        try:
            table = pq.read_table(io.BytesIO(data))
        except (pa.ArrowException, OSError) as exc:
            raise CorruptPartError(f"{url} is not a readable Parquet file: {exc}") from None
        expected = ([CHANGE_OP_COLUMN] if manifest.plan.reads_changes else []) + [
            c.name for c in manifest.plan.columns
        ]
        if table.num_rows != record.rows or table.column_names != expected:
            raise CorruptPartError(
                f"{url} holds {table.num_rows} rows with columns {table.column_names}; its "
                f"manifest says {record.rows} rows with {expected}. Nothing of that night was "
                "applied. Take a new backup of that night."
            )
        return table
