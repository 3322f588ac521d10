"""Writes to one directory over LDAPS (ldap3, synchronous: call it from a thread).

Idempotent where a retry after a crash could repeat a write: adding a member
already present or removing one already gone counts as done. Passwords are
never written: the mapping refuses password attributes and this writer
refuses them again, whatever it is asked. Every DN sent (the entry's, and member
values) goes out in our RFC 4514 escaping (``dn.canonical_dn``), so a value with a
leading ``#`` or leading/trailing spaces is never read by the DC as something else.
"""

from __future__ import annotations

from typing import Any

import ldap3

from indutech_identity_sync.config import Kind, is_secret_attribute
from indutech_identity_sync.dn import DnError, canonical_dn
from indutech_identity_sync.exceptions import DirectoryWriteError
from indutech_identity_sync.model import Values
from indutech_identity_sync.sources.ldap import guid_text

OBJECT_CLASS: dict[Kind, list[str]] = {
    "ou": ["top", "organizationalUnit"],
    "user": ["top", "person", "organizationalPerson", "user"],
    "group": ["top", "group"],
}
_ATTRIBUTE_OR_VALUE_EXISTS = 20
_NO_SUCH_ATTRIBUTE = 16
_MEMBER_CHUNK = 500


def _dn(dn: str) -> str:
    try:
        return canonical_dn(dn)
    except DnError as exc:  # a refusal: the object is quarantined, the cycle goes on
        raise DirectoryWriteError(f"not sent: {exc}") from None


class LdapWriter:
    """The reconciler's writer for one side."""

    def __init__(self, connection: ldap3.Connection) -> None:
        self.connection = connection

    def _check(self, op: str, dn: str, ok: bool, tolerated: tuple[int, ...] = ()) -> None:
        result = self.connection.result or {}
        if ok or result.get("result") in tolerated:
            return
        raise DirectoryWriteError(
            f"{op} {dn} refused: {result.get('description')} ({result.get('message', '').strip()})"
        )

    @staticmethod
    def _refuse_passwords(names: Any) -> None:
        bad = {str(n) for n in names if is_secret_attribute(str(n))}
        if bad:
            raise DirectoryWriteError(f"refusing to write password attributes {sorted(bad)}")

    def add(self, kind: Kind, dn: str, attributes: dict[str, Values]) -> str:
        self._refuse_passwords(attributes)
        dn = _dn(dn)
        values = {k: list(v) for k, v in attributes.items() if v}
        if "member" in values:
            values["member"] = [_dn(m) for m in values["member"]]
        self._check("add", dn, self.connection.add(dn, OBJECT_CLASS[kind], values))
        self.connection.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["objectGUID"])
        entries = [e for e in self.connection.response or [] if e.get("type") == "searchResEntry"]
        if not entries:
            raise DirectoryWriteError(f"added {dn} but cannot read it back")
        return guid_text(entries[0]["raw_attributes"]["objectGUID"][0])

    def modify(self, dn: str, replace: dict[str, Values]) -> None:
        self._refuse_passwords(replace)
        dn = _dn(dn)
        changes = {k: [(ldap3.MODIFY_REPLACE, list(v))] for k, v in replace.items()}
        self._check("modify", dn, self.connection.modify(dn, changes))

    def move(self, dn: str, new_rdn: str, new_parent: str) -> str:
        dn, new_parent = _dn(dn), _dn(new_parent)
        ok = self.connection.modify_dn(dn, new_rdn, new_superior=new_parent)
        self._check("move", dn, ok)
        return f"{new_rdn},{new_parent}"

    def delete(self, dn: str) -> None:
        dn = _dn(dn)
        self._check("delete", dn, self.connection.delete(dn))

    def modify_members(self, group_dn: str, add: list[str], remove: list[str]) -> None:
        group_dn, add, remove = _dn(group_dn), [_dn(d) for d in add], [_dn(d) for d in remove]
        for op, dns, tolerated in (
            (ldap3.MODIFY_ADD, add, (_ATTRIBUTE_OR_VALUE_EXISTS,)),
            (ldap3.MODIFY_DELETE, remove, (_NO_SUCH_ATTRIBUTE,)),
        ):
            for start in range(0, len(dns), _MEMBER_CHUNK):
                chunk = dns[start : start + _MEMBER_CHUNK]
                ok = self.connection.modify(group_dn, {"member": [(op, chunk)]})
                if not ok and len(chunk) > 1:
                    # one value already there (a retried cycle): apply them one by one
                    for dn in chunk:
                        ok_one = self.connection.modify(group_dn, {"member": [(op, [dn])]})
                        self._check("members", group_dn, ok_one, tolerated)
                    continue
                self._check("members", group_dn, ok, tolerated)
