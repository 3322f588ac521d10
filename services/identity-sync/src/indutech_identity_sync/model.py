"""What the reconciler sees of a directory: objects keyed by objectGUID, DNs, values."""

from __future__ import annotations

from dataclasses import dataclass, field

from ldap3.utils.dn import escape_rdn, parse_dn

from indutech_identity_sync.config import Kind

Values = tuple[str, ...]


@dataclass
class DirObject:
    """One object read from a side, in that side's own terms (DNs, raw attribute names)."""

    guid: str
    kind: Kind
    dn: str
    attributes: dict[str, Values] = field(default_factory=dict)
    members: frozenset[str] = frozenset()  # member DNs (groups), all ranges read


def normalize_dn(dn: str) -> str:
    """A comparable form of a DN: attribute types upper-cased, values case-folded, re-escaped."""
    parts = parse_dn(dn, escape=False, strip=True)
    return ",".join(f"{t.upper()}={escape_rdn(_unescape(v)).casefold()}" for t, v, _ in parts)


def split_rdn(dn: str) -> tuple[str, str, str]:
    """(type, unescaped value, parent DN) of a DN."""
    parts = parse_dn(dn, escape=False, strip=True)
    if not parts:
        raise ValueError(f"empty DN {dn!r}")
    rdn_type, rdn_value, _ = parts[0]
    parent = _join(parts[1:])
    return rdn_type.upper(), _unescape(rdn_value), parent


def _join(parts: list[tuple[str, str, str]]) -> str:
    return ",".join(f"{t}={v}" for t, v, _ in parts)


def _unescape(value: str) -> str:
    out: list[str] = []
    raw = bytearray()
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\" and i + 1 < len(value):
            pair = value[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):  # noqa: PLR2004
                raw.append(int(pair, 16))
                i += 3
                continue
            if raw:
                out.append(raw.decode("utf-8", errors="replace"))
                raw.clear()
            out.append(value[i + 1])
            i += 2
            continue
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw.clear()
        out.append(char)
        i += 1
    if raw:
        out.append(raw.decode("utf-8", errors="replace"))
    return "".join(out)


def make_rdn(rdn_type: str, rdn_value: str) -> str:
    return f"{rdn_type}={escape_rdn(rdn_value)}"


def make_dn(rdn_type: str, rdn_value: str, parent: str) -> str:
    return f"{rdn_type}={escape_rdn(rdn_value)},{parent}"


def is_under(dn: str, root: str) -> bool:
    a, b = normalize_dn(dn), normalize_dn(root)
    return a == b or a.endswith("," + b)


def depth_below(dn: str, root: str) -> int:
    return len(parse_dn(dn, escape=False, strip=True)) - len(
        parse_dn(root, escape=False, strip=True)
    )
