"""An in-memory directory for identity-sync's unit tests: GUIDs, DNs, moves, members by GUID."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from indutech_identity_sync.config import Kind
from indutech_identity_sync.dn import canonical_dn
from indutech_identity_sync.errors import DirectoryWriteError
from indutech_identity_sync.model import (
    DirObject,
    Values,
    is_under,
    make_dn,
    normalize_dn,
    reparent,
    split_rdn,
)

DN_ATTRIBUTES = frozenset({"manager"})


@dataclass
class _Entry:
    kind: Kind
    dn: str
    attributes: dict[str, Values]
    members: set[str] = field(default_factory=set)  # GUIDs, as AD keeps references


def _case_only(dn: str) -> str:
    """Names as Samba compares them: case folded letter by letter (Weiß and Weiss differ)."""
    return canonical_dn(dn).lower()


class FakeDirectory:
    """A DirectoryWriter plus ``snapshot`` and helpers to change it "by hand". ``folds``:
    names compare as AD compares them (Weiß = Weiss); False: as Samba does (they differ)."""

    def __init__(self, root: str, *, folds: bool = True) -> None:
        self.root = root
        self._name = normalize_dn if folds else _case_only
        self.entries: dict[str, _Entry] = {}
        self.writes = 0
        self.refuse: set[str] = set()  # normalised DNs whose writes are refused
        self.broken: set[str] = set()  # normalised DNs whose writes lose the connection
        self.refused = 0  # writes refused so far

    # the writer surface
    def add(self, kind: Kind, dn: str, attributes: dict[str, Values]) -> str:
        self._guard(dn)
        if self.guid(dn) is not None:
            raise DirectoryWriteError(f"{dn} exists")
        _, _, parent = split_rdn(dn)
        if normalize_dn(parent) != normalize_dn(self.root) and self.guid(parent) is None:
            raise DirectoryWriteError(f"no parent for {dn}")
        self.writes += 1
        guid = str(uuid.uuid4())
        values = {k.lower(): v for k, v in attributes.items() if v}
        members = {self._guid(m) for m in values.pop("member", ())}
        self.entries[guid] = _Entry(kind, dn, values, members)
        return guid

    def modify(self, dn: str, replace: dict[str, Values]) -> None:
        self._guard(dn)
        self.writes += 1
        entry = self._entry(dn)
        for key, values in replace.items():
            if values:
                entry.attributes[key.lower()] = values
            else:
                entry.attributes.pop(key.lower(), None)

    def move(self, dn: str, new_rdn: str, new_parent: str) -> str:
        self._guard(dn)
        self.writes += 1
        new_dn = f"{new_rdn},{new_parent}"
        self._rename(dn, new_dn)
        return new_dn

    def delete(self, dn: str) -> None:
        self._guard(dn)
        guid = self.guid(dn)
        if guid is None:
            raise DirectoryWriteError(f"no {dn}")
        if any(is_under(e.dn, dn) and g != guid for g, e in self.entries.items()):
            raise DirectoryWriteError(f"{dn} has children")
        self.writes += 1
        del self.entries[guid]
        for entry in self.entries.values():
            entry.members.discard(guid)

    def modify_members(self, group_dn: str, add: list[str], remove: list[str]) -> None:
        self._guard(group_dn)
        self.writes += 1
        entry = self._entry(group_dn)
        entry.members |= {self._guid(d) for d in add}
        entry.members -= {self._guid(d) for d in remove}

    # helpers
    def _guard(self, dn: str) -> None:
        if normalize_dn(dn) in self.broken:
            raise ConnectionResetError(f"the DC went away while writing {dn}")
        if normalize_dn(dn) in self.refuse:
            self.refused += 1
            raise DirectoryWriteError(f"refused {dn}")

    def guid(self, dn: str) -> str | None:
        name = self._name(dn)
        return next((g for g, e in self.entries.items() if self._name(e.dn) == name), None)

    def _guid(self, dn: str) -> str:
        guid = self.guid(dn)
        if guid is None:
            raise DirectoryWriteError(f"no {dn}")
        return guid

    def _entry(self, dn: str) -> _Entry:
        return self.entries[self._guid(dn)]

    def _rename(self, old: str, new: str) -> None:
        old_norm = normalize_dn(old)

        def renamed(dn: str) -> str:
            norm = normalize_dn(dn)
            if norm == old_norm:
                return new
            if norm.endswith("," + old_norm):
                return reparent(dn, old, new)
            return dn

        for entry in self.entries.values():
            entry.dn = renamed(entry.dn)
            for attribute in DN_ATTRIBUTES & entry.attributes.keys():  # AD follows renames
                entry.attributes[attribute] = tuple(map(renamed, entry.attributes[attribute]))

    def snapshot(self) -> list[DirObject]:
        by_guid = {g: e.dn for g, e in self.entries.items()}
        return [
            DirObject(
                guid=g,
                kind=e.kind,
                dn=e.dn,
                attributes=dict(e.attributes),
                members=frozenset(by_guid[m] for m in e.members if m in by_guid),
            )
            for g, e in self.entries.items()
        ]

    # "by hand" changes (an administrator on that side)
    def ou(self, name: str, parent: str | None = None) -> str:
        dn = make_dn("OU", name, parent or self.root)
        self.add("ou", dn, {})
        self.writes -= 1
        return dn

    def user(self, name: str, parent: str | None = None, **attributes: str) -> str:
        dn = make_dn("CN", name, parent or self.root)
        values: dict[str, Values] = {
            "sAMAccountName": (attributes.pop("sam", name[:20]),),
            "userAccountControl": ("512",),
        }
        values.update({k: (v,) for k, v in attributes.items()})
        self.add("user", dn, values)
        self.writes -= 1
        return dn

    def group(self, name: str, parent: str | None = None, members: tuple[str, ...] = ()) -> str:
        dn = make_dn("CN", name, parent or self.root)
        guid = self.add("group", dn, {"sAMAccountName": (name[:20],)})
        self.entries[guid].members = {self._guid(m) for m in members}
        self.writes -= 1
        return dn

    def assign(self, dn: str, **attributes: str) -> None:
        self.modify(dn, {k: (v,) if v else () for k, v in attributes.items()})
        self.writes -= 1

    def get(self, dn: str, attribute: str) -> str | None:
        values = self._entry(dn).attributes.get(attribute.lower())
        return values[0] if values else None

    def rename(self, dn: str, new_rdn: str, new_parent: str | None = None) -> str:
        _, _, parent = split_rdn(dn)
        new_dn = self.move(dn, new_rdn, new_parent or parent)
        self.writes -= 1
        return new_dn

    def remove(self, dn: str) -> None:
        self.delete(dn)
        self.writes -= 1

    def members(self, group_dn: str) -> set[str]:
        return {self.entries[g].dn for g in self._entry(group_dn).members}

    def dns(self) -> set[str]:
        return {e.dn for e in self.entries.values()}
