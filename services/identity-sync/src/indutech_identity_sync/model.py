"""What the reconciler sees of a directory: objects keyed by objectGUID, DNs, values."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import lru_cache

from indutech_identity_sync.config import Kind
from indutech_identity_sync.dn import escape_value, fold, format_dn, format_rdn, parse_dn
from indutech_identity_sync.errors import DnError

Values = tuple[str, ...]


def guid_text(raw: bytes) -> str:
    """An objectGUID as LDAP returns it (little-endian bytes) in its text form."""
    return str(uuid.UUID(bytes_le=raw))


@dataclass
class DirObject:
    """One object read from a side, in that side's own terms (DNs, raw attribute names)."""

    guid: str
    kind: Kind
    dn: str
    attributes: dict[str, Values] = field(default_factory=dict)
    members: frozenset[str] = frozenset()  # member DNs (groups), all ranges read


@lru_cache(maxsize=65536)  # a mirror asks for the same DNs again and again
def normalize_dn(dn: str) -> str:
    """A comparable form of a DN, as AD compares names: attribute types upper-cased, values
    folded (case, width, ß = ss: ``dn.fold``) and re-escaped, AVAs of an RDN sorted."""
    return ",".join(
        "+".join(sorted(f"{kind.upper()}={escape_value(fold(value))}" for kind, value in rdn))
        if len(rdn) > 1
        else f"{rdn[0][0].upper()}={escape_value(fold(rdn[0][1]))}"
        for rdn in parse_dn(dn)
    )


def split_rdn(dn: str) -> tuple[str, str, str]:
    """(type, unescaped value, parent DN) of a DN whose first RDN has one value (as in AD)."""
    rdns = parse_dn(dn)
    if not rdns:
        raise DnError(f"empty DN {dn!r}")
    if len(rdns[0]) != 1:
        raise DnError(f"{dn!r}: multi-valued RDNs are not synced (AD has none)")
    ((rdn_type, rdn_value),) = rdns[0]
    return rdn_type.upper(), rdn_value, format_dn(rdns[1:])


def make_rdn(rdn_type: str, rdn_value: str) -> str:
    return format_rdn(((rdn_type, rdn_value),))


def make_dn(rdn_type: str, rdn_value: str, parent: str) -> str:
    return f"{make_rdn(rdn_type, rdn_value)},{parent}" if parent else make_rdn(rdn_type, rdn_value)


def reparent(dn: str, old_parent: str, new_parent: str) -> str:
    """``dn`` (at or below ``old_parent``) with ``old_parent`` replaced by ``new_parent``."""
    rdns = parse_dn(dn)
    keep = len(rdns) - len(parse_dn(old_parent))
    if keep < 0:
        raise DnError(f"{dn!r} is not below {old_parent!r}")
    return ",".join(p for p in (format_dn(rdns[:keep]), new_parent) if p)


def is_under(dn: str, root: str) -> bool:
    a, b = normalize_dn(dn), normalize_dn(root)
    return a == b or a.endswith("," + b)


def depth_below(dn: str, root: str) -> int:
    return len(parse_dn(dn)) - len(parse_dn(root))
