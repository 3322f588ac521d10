"""The write surface of one directory, as the reconciler uses it (LDAP, a fake, or a dry run)."""

from __future__ import annotations

import itertools
from typing import Protocol

import structlog

from indutech_identity_sync.config import Kind, Side
from indutech_identity_sync.model import Values


class DirectoryWriter(Protocol):
    """Synchronous writes to one side; every method raises DirectoryWriteError on refusal."""

    def add(self, kind: Kind, dn: str, attributes: dict[str, Values]) -> str:
        """Create the object and return its objectGUID."""

    def modify(self, dn: str, replace: dict[str, Values]) -> None:
        """Replace attribute values (an empty tuple clears the attribute)."""

    def move(self, dn: str, new_rdn: str, new_parent: str) -> str:
        """Rename and/or move; return the new DN."""

    def delete(self, dn: str) -> None: ...

    def modify_members(self, group_dn: str, add: list[str], remove: list[str]) -> None: ...


class DryRunWriter:
    """Prints the planned change instead of writing it (``--dry-run``)."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.planned: list[tuple[str, str, object]] = []
        self._ids = itertools.count(1)
        self._log = structlog.get_logger("identity-sync")

    def _plan(self, op: str, dn: str, detail: object) -> None:
        self.planned.append((op, dn, detail))
        self._log.info("planned_change", side=self.side, op=op, dn=dn, detail=detail)

    def add(self, kind: Kind, dn: str, attributes: dict[str, Values]) -> str:
        self._plan("add", dn, {"kind": kind, "attributes": sorted(attributes)})
        return f"dry-run-{self.side}-{next(self._ids)}"

    def modify(self, dn: str, replace: dict[str, Values]) -> None:
        self._plan("modify", dn, sorted(replace))

    def move(self, dn: str, new_rdn: str, new_parent: str) -> str:
        self._plan("move", dn, {"new_rdn": new_rdn, "new_parent": new_parent})
        return f"{new_rdn},{new_parent}"

    def delete(self, dn: str) -> None:
        self._plan("delete", dn, None)

    def modify_members(self, group_dn: str, add: list[str], remove: list[str]) -> None:
        self._plan("members", group_dn, {"add": len(add), "remove": len(remove)})
