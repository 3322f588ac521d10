"""Writes to one directory over LDAPS (ldap3, synchronous: call it from a thread).

Idempotent where a retry after a crash could repeat a write: adding a member
already present or removing one already gone counts as done. Passwords are
never copied: the mapping refuses password attributes and this writer
refuses them again, whatever it is asked. The one password it writes is the
random one a new user gets in its add (``initial_password``: nobody knows it),
so that the account can be enabled under the DC's password policy. Every DN sent
(the entry's, and member values) goes out in our RFC 4514 escaping
(``dn.canonical_dn``), so a value with a leading ``#`` or leading/trailing spaces
is never read by the DC as something else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import ldap3

from indutech_identity_sync import initial_password
from indutech_identity_sync.config import Kind, is_secret_attribute
from indutech_identity_sync.dn import canonical_dn
from indutech_identity_sync.errors import DirectoryWriteError, DnError
from indutech_identity_sync.model import Values, guid_text, split_rdn

OBJECT_CLASS: dict[Kind, list[str]] = {
    "ou": ["top", "organizationalUnit"],
    "user": ["top", "person", "organizationalPerson", "user"],
    "group": ["top", "group"],
}
_ATTRIBUTE_OR_VALUE_EXISTS = 20
_NO_SUCH_ATTRIBUTE = 16
_CONSTRAINT_VIOLATION = 19
_MEMBER_CHUNK = 500
# the names AD's complexity rule compares a password with (and the RDN's, to be safe)
_NAME_ATTRIBUTES = ("samaccountname", "displayname", "givenname", "sn", "cn")


def _dn(dn: str) -> str:
    try:
        return canonical_dn(dn)
    except DnError as exc:  # a refusal: the object is quarantined, the cycle goes on
        raise DirectoryWriteError(f"not sent: {exc}") from None


class LdapWriter:
    """The reconciler's writer for one side. ``password``: makes the random initial password
    of a new user from its names (default ``initial_password.generate``; a test may pass a
    weak one to see the DC's policy refuse it)."""

    def __init__(
        self,
        connection: ldap3.Connection,
        *,
        password: Callable[[Iterable[str]], str] = initial_password.generate,
    ) -> None:
        self.connection = connection
        self._password = password

    def _check(self, op: str, dn: str, ok: bool, tolerated: tuple[int, ...] = ()) -> None:
        result = self.connection.result or {}
        if ok or result.get("result") in tolerated:
            return
        raise DirectoryWriteError(f"{op} {dn} refused: {self._result_text()}")

    def _result_code(self) -> object:
        return (self.connection.result or {}).get("result")

    def _result_text(self) -> str:
        result = self.connection.result or {}
        return f"{result.get('description')} ({result.get('message', '').strip()})"

    def _initial_password(self, dn: str, attributes: dict[str, Values]) -> bytes:
        """The new user's random password as AD takes it: quoted, UTF-16-LE."""
        names = [split_rdn(dn)[1]]
        names += [v for k, vs in attributes.items() if k.lower() in _NAME_ATTRIBUTES for v in vs]
        return f'"{self._password(names)}"'.encode("utf-16-le")

    @staticmethod
    def _refuse_passwords(names: Any) -> None:
        bad = {str(n) for n in names if is_secret_attribute(str(n))}
        if bad:
            raise DirectoryWriteError(f"refusing to write password attributes {sorted(bad)}")

    def add(self, kind: Kind, dn: str, attributes: dict[str, Values]) -> str:
        self._refuse_passwords(attributes)
        dn = _dn(dn)
        values: dict[str, list[Any]] = {k: list(v) for k, v in attributes.items() if v}
        if "member" in values:
            values["member"] = [_dn(m) for m in values["member"]]
        if kind == "user":
            # in the add itself: an enabled account needs a password under a policy, and a
            # user must never exist enabled without one, not even between two writes
            values["unicodePwd"] = [self._initial_password(dn, attributes)]
        ok = self.connection.add(dn, OBJECT_CLASS[kind], values)
        if not ok and kind == "user" and self._result_code() == _CONSTRAINT_VIOLATION:
            raise DirectoryWriteError(
                f"add {dn} refused: {self._result_text()}; a constraint such as the domain's "
                "password policy refused the account: the random initial password has "
                f"{initial_password.LENGTH} characters of four classes and none of the "
                "account's names, so check for a policy (fine-grained ones included) that asks "
                "for more, or for a value of a synced attribute the schema refuses"
            )
        self._check("add", dn, ok)
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
