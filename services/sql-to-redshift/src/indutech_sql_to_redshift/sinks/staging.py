"""How a night's checked parts get into a warehouse table: the step that differs by engine.

The sink reads each part (``BackupSource.part``: SHA-256, rows and columns checked against
the manifest) and hands it to a ``Stager`` with its record, then calls ``finish`` once all
parts of the night are handed over, still inside the night's transaction:

- ``ArrowCopyStager`` (PostgreSQL): each part is sent as it comes by the common Arrow →
  binary COPY loader (``copy_arrow_batches``), the next part read meanwhile.
- ``S3ManifestStager`` (Redshift, which has no ``COPY FROM STDIN``): the parts stay where
  sql-backup wrote them. ``finish`` writes a COPY manifest file listing exactly the parts
  that were checked (``mandatory``, with each object's ``content_length``, which Redshift
  requires for Parquet) under the lake's staging prefix, then runs ``COPY … FROM
  's3://…manifest' IAM_ROLE '…' FORMAT AS PARQUET MANIFEST``. Redshift reads the objects
  again on its side: a part replaced between the check and the COPY is caught by the
  reconciliation that follows (rows and money totals of the checked data against the
  table), which rolls the night back. The manifest files are deleted after the transaction,
  committed or not (a crash may leave some: a lifecycle rule on the prefix removes them).

No Redshift runs here: the manifest is written to MinIO and its JSON shape tested, the
COPY statement parsed with sqlglot's Redshift dialect, and the Redshift sequence (the
manifest, then a COPY of what it lists) run on PostgreSQL by the tests, with ``copy``
replaced by a load of the listed objects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import asyncpg
import pyarrow as pa

from indutech_common.s3 import delete_staged
from indutech_common.schemas.sql_backup import PartRecord
from indutech_common.warehouse import ArrowCopyError, copy_arrow_batches
from indutech_sql_to_redshift.config import SqlToRedshiftSettings
from indutech_sql_to_redshift.errors import UnloadableValueError
from indutech_sql_to_redshift.nights import Night
from indutech_sql_to_redshift.sinks.sql import Statements

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


@dataclass(frozen=True)
class Target:
    """Where a night's parts go: a staged table (``schema.table``) or a temporary stage."""

    table: str
    schema: str | None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


class Stager(Protocol):
    """Fills one table with a night's checked parts, inside the night's transaction."""

    async def part(
        self,
        connection: asyncpg.Connection,
        target: Target,
        night: Night,
        record: PartRecord,
        data: pa.Table,
    ) -> None:
        """One checked part (``data`` is its content, as checked)."""
        ...

    async def finish(self, connection: asyncpg.Connection, target: Target, night: Night) -> None:
        """Every part of the night was handed over."""
        ...

    async def cleanup(self) -> None:
        """After the transaction (committed or not): remove what was staged outside it."""
        ...


class ArrowCopyStager:
    """PostgreSQL: each part through the common pipelined Arrow → binary COPY loader."""

    async def part(
        self,
        connection: asyncpg.Connection,
        target: Target,
        night: Night,
        record: PartRecord,
        data: pa.Table,
    ) -> None:
        del record
        try:
            await copy_arrow_batches(
                connection, target.table, data.to_batches(), schema_name=target.schema
            )
        except ArrowCopyError as exc:
            raise UnloadableValueError(
                f"{night.manifest.plan.qualified} {night}: {exc} Nothing of that night was applied."
            ) from None

    async def finish(self, connection: asyncpg.Connection, target: Target, night: Night) -> None:
        del connection, target, night  # every part was sent as it came

    async def cleanup(self) -> None:
        return None


def copy_manifest(entries: Sequence[tuple[str, int]]) -> bytes:
    """A Redshift COPY manifest: each ``(s3 url, object size)`` mandatory, with the
    ``content_length`` Redshift requires to load Parquet through a manifest."""
    return json.dumps(
        {
            "entries": [
                {"url": url, "mandatory": True, "meta": {"content_length": size}}
                for url, size in entries
            ]
        },
        indent=1,
    ).encode()


class S3ManifestStager:
    """Redshift: the checked parts listed in a manifest file, loaded by one COPY."""

    def __init__(
        self,
        s3: S3Client,
        *,
        backup_bucket: str,
        staging_bucket: str,
        staging_prefix: str,
        iam_role: str,
        statements: Statements,
    ) -> None:
        self._s3 = s3
        self.backup_bucket = backup_bucket
        self.staging_bucket = staging_bucket
        self.staging_prefix = staging_prefix
        self.iam_role = iam_role
        self.statements = statements
        self._entries: dict[str, list[tuple[str, int]]] = {}
        self._written: list[str] = []

    async def part(
        self,
        connection: asyncpg.Connection,
        target: Target,
        night: Night,
        record: PartRecord,
        data: pa.Table,
    ) -> None:
        del connection, night, data
        url = f"s3://{self.backup_bucket}/{record.key}"
        self._entries.setdefault(target.qualified, []).append((url, record.bytes))

    async def write_manifest(self, target: Target, night: Night) -> str:
        """The manifest of the parts handed over for ``target``; returns its s3:// URI."""
        entries = self._entries.pop(target.qualified, [])
        plan = night.manifest.plan
        key = (
            f"{self.staging_prefix}{self.statements.schema}/{plan.table}/"
            f"{night.day.isoformat()}-{night.kind}-{uuid.uuid4().hex}.manifest"
        )
        await self._s3.put_object(
            Bucket=self.staging_bucket,
            Key=key,
            Body=copy_manifest(entries),
            ContentType="application/json",
        )
        self._written.append(key)
        return f"s3://{self.staging_bucket}/{key}"

    async def copy(self, connection: asyncpg.Connection, target: Target, manifest_uri: str) -> None:
        """Redshift's COPY of what the manifest lists (the tests load it on PostgreSQL)."""
        await connection.execute(
            self.statements.rs_copy_manifest(
                target.qualified, manifest_uri=manifest_uri, iam_role=self.iam_role
            )
        )

    async def finish(self, connection: asyncpg.Connection, target: Target, night: Night) -> None:
        if target.qualified not in self._entries:
            return
        await self.copy(connection, target, await self.write_manifest(target, night))

    async def cleanup(self) -> None:
        """The night's manifest files deleted, best effort (``delete_staged``): its
        transaction, not this, decides whether the night loaded."""
        written, self._written = self._written, []
        self._entries.clear()
        await delete_staged(self._s3, self.staging_bucket, written)


def stager_for(settings: SqlToRedshiftSettings, s3: S3Client) -> Stager | None:
    """The stager the warehouse's dialect needs (None: the sink's default, binary COPY)."""
    if settings.warehouse.dialect != "redshift":
        return None
    if settings.redshift_iam_role is None:  # refused by the settings already
        raise ValueError("Redshift needs SQL_TO_REDSHIFT_REDSHIFT_IAM_ROLE")
    return S3ManifestStager(
        s3,
        backup_bucket=settings.s3.backup_bucket,
        staging_bucket=settings.s3.lake_bucket,
        staging_prefix=settings.staging_prefix,
        iam_role=settings.redshift_iam_role,
        statements=Statements(settings.raw_schema, "redshift"),
    )
