"""What the worker knows of one side between cycles: every scoped object, indexed by GUID and DN.

A full reconcile loads a mirror from a scope read; a change batch (the change
watch) re-reads only the changed objects and applies them here, so a cycle
touches only what changed. References (group members, DN-valued attributes
such as ``manager``) are held as objectGUIDs, so renaming or moving an object
never leaves a stale DN behind in the objects that point to it; an in-scope DN
not known yet is held as ``?<normalised DN>`` and resolved when it appears.
"""

from __future__ import annotations

from collections.abc import Iterable

from indutech_identity_sync.config import Mapping, Side
from indutech_identity_sync.dn import canonical_dn
from indutech_identity_sync.errors import DnError
from indutech_identity_sync.model import DirObject, make_dn, normalize_dn, reparent

PENDING = "?"


class Mirror:
    """The objects of one side, kept current with what we read and what we write."""

    def __init__(self, name: Side, mapping: Mapping, objects: Iterable[DirObject] = ()) -> None:
        self.name = name
        self.root = mapping.root(name)
        self.root_norm = normalize_dn(self.root)
        self.ref_attributes = frozenset(
            (rule.onprem if name == "onprem" else rule.aws_name).lower()
            for rule in mapping.attributes.values()
            if rule.transform == "dn"
        )
        self.excluded = (
            tuple("," + normalize_dn(make_dn("OU", ou, self.root)) for ou in mapping.exclude_ous)
            if name == "onprem"
            else ()
        )
        self.objects: dict[str, DirObject] = {}
        self.norm: dict[str, str] = {}  # guid -> normalised DN
        self.by_dn: dict[str, str] = {}  # normalised DN -> guid (the first one of a clash)
        # normalised DN -> every guid with it: names AD folds to one (Weiß, Weiss) that a
        # directory folding less (Samba) holds side by side
        self.clashes: dict[str, set[str]] = {}
        self.rejected: dict[str, tuple[str, str]] = {}  # guid -> (DN, why it does not parse)
        self.apply(objects, ())
        self.settle(list(self.objects))  # a full read: an unknown DN is not a synced object

    # -- lookups -----------------------------------------------------------------------------

    def guid_at(self, dn: str) -> str | None:
        return self._lookup(dn, normalize_dn(dn))

    def _lookup(self, dn: str, norm: str) -> str | None:
        """The GUID at ``dn``; among names that clash, the one spelled as ``dn`` (but for case)."""
        clash = self.clashes.get(norm)
        if clash is not None:
            spelled = canonical_dn(dn).lower()
            for guid in sorted(clash):
                if canonical_dn(self.objects[guid].dn).lower() == spelled:
                    return guid
        return self.by_dn.get(norm)

    def same_name(self, guid: str) -> list[str]:
        """The other GUIDs whose DN AD would take for this one's."""
        clash = self.clashes.get(self.norm.get(guid, ""), set())
        return sorted(clash - {guid})

    def resolve(self, ref: str) -> str | None:
        """The GUID a reference names now, or None (gone, or not known yet: see ``pending``)."""
        if ref.startswith(PENDING):
            return self.by_dn.get(ref[1:])
        return ref if ref in self.objects else None

    def pending(self, ref: str) -> bool:
        """True for an in-scope DN that names no known object yet (wait, do not treat as gone)."""
        return ref.startswith(PENDING) and ref[1:] not in self.by_dn

    def subtree(self, guid: str) -> list[str]:
        """The GUIDs strictly below ``guid``."""
        suffix = "," + self.norm[guid]
        return [g for g, n in self.norm.items() if n.endswith(suffix)]

    # -- changes -----------------------------------------------------------------------------

    def apply(self, found: Iterable[DirObject], gone: Iterable[str]) -> None:
        """Objects read (new or changed, references as DNs) and GUIDs no longer in scope.

        A GUID gone takes its subtree with it (an OU moved out of scope); an OU
        found at a new DN carries its children's DNs along (AD does not report
        the children of a moved OU as changed).
        """
        for guid in gone:
            if guid in self.objects:
                for child in self.subtree(guid):
                    self.remove(child)
                self.remove(guid)
        fresh = list(found)
        readable = []
        for obj in fresh:
            try:
                norm = normalize_dn(obj.dn)
            except DnError as exc:  # left out, and quarantined by the reconciler
                self.remove(obj.guid)
                self.rejected[obj.guid] = (obj.dn, str(exc))
                continue
            self.rejected.pop(obj.guid, None)
            old = self.objects.get(obj.guid)
            if old is not None and self.norm[obj.guid] != norm:
                self.moved(obj.guid, obj.dn)
            self.insert(obj, norm)
            readable.append(obj)
        for obj in readable:
            self._to_refs(obj)

    def insert(self, obj: DirObject, norm: str | None = None) -> None:
        """Add or replace an object whose references are already GUIDs (or none)."""
        old = self.norm.get(obj.guid)
        if old is not None:
            self._unindex(obj.guid, old)
        norm = norm or normalize_dn(obj.dn)
        self.objects[obj.guid] = obj
        self.norm[obj.guid] = norm
        holder = self.by_dn.setdefault(norm, obj.guid)
        if holder != obj.guid:
            self.clashes.setdefault(norm, {holder}).add(obj.guid)

    def remove(self, guid: str) -> None:
        self.objects.pop(guid, None)
        self.rejected.pop(guid, None)
        norm = self.norm.pop(guid, None)
        if norm is not None:
            self._unindex(guid, norm)

    def _unindex(self, guid: str, norm: str) -> None:
        clash = self.clashes.get(norm)
        if clash is not None:
            clash.discard(guid)
            if self.by_dn.get(norm) == guid:
                self.by_dn[norm] = min(clash)
            if len(clash) < 2:  # noqa: PLR2004 - one left: no clash any more
                del self.clashes[norm]
        elif self.by_dn.get(norm) == guid:
            del self.by_dn[norm]

    def moved(self, guid: str, new_dn: str) -> None:
        """``guid`` now lives at ``new_dn``: rewrite its DN and those of everything below it."""
        obj = self.objects[guid]
        old_dn = obj.dn
        for child in self.subtree(guid):  # its RDNs down to ``guid``, then the new DN
            child_obj = self.objects[child]
            child_obj.dn = reparent(child_obj.dn, old_dn, new_dn)
            self.insert(child_obj)
        obj.dn = new_dn
        self.insert(obj)

    def pending_dns(self, guids: Iterable[str]) -> set[str]:
        """The in-scope DNs the objects ``guids`` reference but this mirror does not know."""
        out: set[str] = set()
        for guid in guids:
            obj = self.objects.get(guid)
            if obj is None:
                continue
            refs = [*obj.members]
            for attr in self.ref_attributes & obj.attributes.keys():
                refs.extend(obj.attributes[attr])
            out.update(ref[1:] for ref in refs if self.pending(ref))
        return out

    def settle(self, guids: Iterable[str]) -> None:
        """Resolve the references of ``guids`` for good: a DN still unknown is not synced
        (a computer, a contact, an object of a kind the mapping leaves out) and is dropped."""
        for guid in guids:
            obj = self.objects.get(guid)
            if obj is None:
                continue
            obj.members = frozenset(r for r in map(self.resolve, obj.members) if r is not None)
            for attr in self.ref_attributes & obj.attributes.keys():
                resolved = (self.resolve(ref) for ref in obj.attributes[attr])
                obj.attributes[attr] = tuple(r for r in resolved if r is not None)

    def _to_refs(self, obj: DirObject) -> None:
        obj.members = frozenset(
            ref for ref in (self._ref(dn) for dn in obj.members) if ref is not None
        )
        for attr in self.ref_attributes & obj.attributes.keys():
            refs = (self._ref(dn) for dn in obj.attributes[attr])
            obj.attributes[attr] = tuple(ref for ref in refs if ref is not None)

    def _ref(self, dn: str) -> str | None:
        try:
            norm = normalize_dn(dn)
        except DnError:
            return None  # the DN of an object left out (it does not parse): not synced
        guid = self._lookup(dn, norm)
        if guid is not None:
            return guid
        if norm.endswith("," + self.root_norm) and not any(
            ("," + norm).endswith(x) for x in self.excluded
        ):
            return PENDING + norm
        return None  # outside the scope: never synced
