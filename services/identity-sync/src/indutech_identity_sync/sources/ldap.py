"""Reading a scope of one directory, and noticing that something changed.

ldap3 is synchronous: everything here runs in a thread (``asyncio.to_thread``).
Searches keep only ``searchResEntry`` results (a search from the domain root
also returns referrals). Large ``member`` attributes are read in ranges
(``member;range=lo-hi``) as real AD serves them past 1,500 values; Samba
returns them whole, which this code also accepts.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import ldap3

from indutech_common.ldap import ldap_connect
from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import KINDS, Kind, Mapping, Side
from indutech_identity_sync.exceptions import IdentitySyncError
from indutech_identity_sync.model import DirObject, Values, is_under, normalize_dn, split_rdn

SHOW_DELETED_OID = "1.2.840.113556.1.4.417"
_RANGE = re.compile(r"^(?P<attr>[^;]+);range=(?P<lo>\d+)-(?P<hi>\d+|\*)$", re.IGNORECASE)
PAGE_SIZE = 500


class DirectoryReadError(IdentitySyncError):
    """A search failed (the cycle is abandoned and retried)."""


def guid_text(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def _entries(connection: ldap3.Connection) -> list[dict[str, Any]]:
    return [e for e in connection.response or [] if e.get("type") == "searchResEntry"]


def _values(raw: list[bytes]) -> Values:
    return tuple(v.decode("utf-8") for v in raw)


def _filter(mapping: Mapping, kind: Kind) -> str:
    return {"ou": mapping.ou_filter, "user": mapping.user_filter, "group": mapping.group_filter}[
        kind
    ]


def read_scope(connection: ldap3.Connection, mapping: Mapping, side: Side) -> list[DirObject]:
    """Every OU, user and group under the side's root (the root itself excluded)."""
    root = mapping.root(side)
    excluded = [f"OU={name},{root}" for name in mapping.exclude_ous] if side == "onprem" else []
    objects: list[DirObject] = []
    for kind in KINDS:
        rules = mapping.rules_for(kind).values()
        names = {r.onprem if side == "onprem" else r.aws_name for r in rules}
        attributes = sorted(names | {"objectGUID"} | ({"member"} if kind == "group" else set()))
        for entry in _paged(connection, root, _filter(mapping, kind), attributes):
            dn = entry["dn"]
            if normalize_dn(dn) == normalize_dn(root) or any(is_under(dn, x) for x in excluded):
                continue
            raw = {k.lower(): v for k, v in entry["raw_attributes"].items()}
            members: frozenset[str] = frozenset()
            if kind == "group":
                members = frozenset(collect_members(connection, dn, raw))
            values = {
                k: _values(v)
                for k, v in raw.items()
                if k not in {"objectguid", "member"} and not k.startswith("member;")
            }
            objects.append(
                DirObject(
                    guid=guid_text(raw["objectguid"][0]),
                    kind=kind,
                    dn=dn,
                    attributes=values,
                    members=members,
                )
            )
    return objects


def _paged(
    connection: ldap3.Connection, base: str, search_filter: str, attributes: list[str]
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cookie: bytes | None = None
    while True:
        ok = connection.search(
            base,
            search_filter,
            ldap3.SUBTREE,
            attributes=attributes,
            paged_size=PAGE_SIZE,
            paged_cookie=cookie,
        )
        if not ok and connection.result.get("result") not in (0, 4):
            raise DirectoryReadError(
                f"search under {base} failed: {connection.result.get('description')}"
            )
        entries.extend(_entries(connection))
        control = connection.result.get("controls", {}).get("1.2.840.113556.1.4.319", {})
        cookie = control.get("value", {}).get("cookie")
        if not cookie:
            return entries


def collect_members(
    connection: ldap3.Connection, dn: str, raw: dict[str, list[bytes]], attribute: str = "member"
) -> list[str]:
    """All values of a multi-valued attribute, following ``attr;range=lo-hi`` pages."""
    values = [v.decode("utf-8") for v in raw.get(attribute, [])]
    page = _range_page(raw, attribute)
    while page is not None:
        page_values, high = page
        values.extend(page_values)
        if high == "*":
            break
        next_range = f"{attribute};range={int(high) + 1}-*"
        connection.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[next_range])
        entries = _entries(connection)
        if not entries:
            raise DirectoryReadError(f"ranged read of {attribute} on {dn} returned nothing")
        page = _range_page(
            {k.lower(): v for k, v in entries[0]["raw_attributes"].items()}, attribute
        )
        if page is None:  # the server answered without a range: the rest, whole
            rest = entries[0]["raw_attributes"]
            values.extend(
                v.decode("utf-8") for k, vs in rest.items() if k.lower() == attribute for v in vs
            )
    return values


def _range_page(raw: dict[str, list[bytes]], attribute: str) -> tuple[list[str], str] | None:
    for key, values in raw.items():
        match = _RANGE.match(key)
        if match and match["attr"].lower() == attribute and values:
            return [v.decode("utf-8") for v in values], match["hi"]
    return None


def read_member_ranges(connection: ldap3.Connection, dn: str, *, step: int) -> list[str]:
    """Read ``member`` asking for explicit ranges of ``step`` values (AD's ranged retrieval)."""
    first = f"member;range=0-{step - 1}"
    connection.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[first])
    entries = _entries(connection)
    if not entries:
        raise DirectoryReadError(f"{dn} not found")
    raw = {k.lower(): v for k, v in entries[0]["raw_attributes"].items()}
    return collect_members(connection, dn, raw)


def highest_usn(connection: ldap3.Connection) -> tuple[str, int]:
    """(the DC's NTDS settings DN, its highestCommittedUSN) from the rootDSE."""
    connection.search(
        "", "(objectClass=*)", ldap3.BASE, attributes=["highestCommittedUSN", "dsServiceName"]
    )
    entries = _entries(connection)
    if not entries:
        raise DirectoryReadError("the rootDSE did not answer")
    raw = entries[0]["raw_attributes"]
    return raw["dsServiceName"][0].decode(), int(raw["highestCommittedUSN"][0])


def usn_changed_since(connection: ldap3.Connection, root: str, usn: int) -> bool:
    """True when an object under ``root`` (or a deleted one) has uSNChanged above ``usn``."""
    connection.search(
        root, f"(uSNChanged>={usn + 1})", ldap3.SUBTREE, attributes=["uSNChanged"], size_limit=1
    )
    if _entries(connection):
        return True
    base = split_rdn(root)[2] if root.upper().startswith("OU=") else root
    while base.upper().startswith("OU="):
        base = split_rdn(base)[2]
    connection.search(
        base,
        f"(&(isDeleted=TRUE)(uSNChanged>={usn + 1}))",
        ldap3.SUBTREE,
        attributes=["uSNChanged"],
        size_limit=1,
        controls=[(SHOW_DELETED_OID, True, None)],
    )
    return bool(_entries(connection))


class DirSyncWatcher:
    """On-prem change signal: DirSync from the naming context, resumed from a stored cookie."""

    def __init__(
        self,
        connection: ldap3.Connection,
        naming_context: str,
        cookie: bytes | None,
        attributes: list[str],
    ) -> None:
        # DirSync reports an object when one of the requested attributes changed: asking
        # for objectGUID alone reports nothing (checked on Samba 4.17), so ask for the
        # synced attributes plus name (renames, moves) and isDeleted (tombstones).
        wanted = sorted({*attributes, "objectGUID", "name", "isDeleted", "member"})
        self._sync = connection.extend.microsoft.dir_sync(
            naming_context, attributes=wanted, cookie=cookie
        )

    @property
    def cookie(self) -> bytes | None:
        cookie = self._sync.cookie
        return bytes(cookie) if cookie else None

    def changed(self) -> bool:
        """True when DirSync returned any entry since the last call."""
        changes = False
        while True:
            entries = self._sync.loop()
            changes = changes or bool(entries)
            if not self._sync.more_results:
                return changes


NOTIFICATION_OID = "1.2.840.113556.1.4.528"


class ChangeNotifier:
    """AD's change-notification control on a subtree: a wake-up, not a change source.

    A search with LDAP_SERVER_NOTIFICATION_OID never completes: the DC sends an
    entry each time an object under the base is added or modified (deletes are
    not notified; the USN and DirSync checks that follow every wake-up see them).
    ldap3's ASYNC_STREAM strategy hands each entry to ``on_change`` from its
    receiver thread. If the connection drops, the poll interval remains.
    """

    def __init__(self, settings: LdapSettings, base: str, on_change: Callable[[], None]) -> None:
        self.connection = ldap_connect(settings, client_strategy=ldap3.ASYNC_STREAM)
        self.connection.strategy.callback = lambda _entry: on_change()
        self.message_id = self.connection.search(
            base,
            "(objectClass=*)",
            ldap3.SUBTREE,
            attributes=["objectGUID"],
            controls=[(NOTIFICATION_OID, True, None)],
        )
        self.connection.strategy.persistent_search_message_id = self.message_id

    def close(self) -> None:
        try:
            self.connection.abandon(self.message_id)
        finally:
            self.connection.unbind()
