"""The record of ``identity.changes.v1``: identity-sync's audit of what it applied.

identity-sync writes one record per applied directory change and one per object
it quarantined, after the cycle that made them (key: the objectGUID written, else
the DN). Any reader of the audit topic uses this model. Values of attributes are
never in it, only their names.

Version 1 gained op ``quarantine`` and the field ``reason`` on 2026-12-04; a record
sent before has no ``reason`` and reads with ``reason == ""``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

# uuid5 namespace of event ids: an id is derived from the change, so a record re-sent
# for the same write (a retried publish) keeps its id and readers can dedupe by it.
_NAMESPACE = uuid.UUID("6c5b7f0e-3d1a-4c57-9a53-0d6f1c1e2a60")

ChangeOp = Literal["add", "modify", "move", "delete", "members", "quarantine"]


class ChangeRecord(BaseModel):
    """One applied change, or one object quarantined (schema_version 1).

    For op ``quarantine`` the object could not be applied to ``side``: ``dn`` and
    ``object_guid`` name it on its own side, ``reason`` says why (the DNs concerned and what
    the DC answered; never attribute values).
    """

    schema_version: int = 1
    event_id: str = ""
    event_time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    side: Literal["onprem", "aws"]
    op: ChangeOp
    dn: str
    object_guid: str = ""
    attributes: list[str] = Field(default_factory=list)  # names only, never values
    dry_run: bool = False
    reason: str = ""  # op quarantine: why the object could not be applied

    def model_post_init(self, _context: object) -> None:
        if not self.event_id:
            key = (
                f"{self.side}|{self.op}|{self.dn}|{self.object_guid}|{self.event_time.isoformat()}"
            )
            self.event_id = str(uuid.uuid5(_NAMESPACE, key))

    def key(self) -> bytes:
        """The record's Kafka key: the objectGUID written, else the DN."""
        return (self.object_guid or self.dn).encode()
