"""Distinguished names: one escape and one parse that round-trip every RFC 4514 value.

``parse_dn(format_dn(rdns)) == rdns`` for any attribute values (a property test over
generated names holds us to it). Both directions are ours, not ldap3's: its
``escape_rdn`` escapes ``#`` only at the start and its ``parse_dn`` refuses any
unescaped ``#`` (legal inside a value) and, with ``strip=True``, a value ending in an
escaped space, so a CN such as ``G1 #Top`` or ``Trail `` stopped every cycle.

Escaping writes a backslash before ``, + " \\ < > ; = #`` wherever they are (RFC 4514
asks it for ``#`` only at the start; AD and Samba escape it everywhere and accept both),
before a leading or trailing space, and hex pairs (``\\0A``) for control characters.
Non-ASCII characters stay as they are (LDAPv3 DNs are UTF-8).

Parsing accepts what DCs and people write: hex pairs (decoded together as UTF-8),
a backslash before any character, unescaped ``#`` and ``=`` inside a value, spaces around
``,`` ``+`` ``=`` (dropped unless escaped), and the ``#<hex BER>`` form of a value. It
refuses what is ambiguous (an unescaped ``"``, ``;``, ``<`` or ``>``, a missing ``=``, a
dangling backslash, hex pairs that are not UTF-8) with a ``DnError`` naming the DN.

``fold`` is how AD compares names (case, width and compatibility forms ignored, so
``Weiß`` = ``WEISS`` = ``weiss``): NFKC and Unicode case folding, to a fixed point.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from indutech_identity_sync.errors import DnError

Ava = tuple[str, str]  # (attribute type as written, value unescaped)
Rdn = tuple[Ava, ...]  # one or more AVAs joined by "+"

_ESCAPED = frozenset(',+"\\<>;=#')
_HEX = frozenset("0123456789abcdefABCDEF")
_REFUSED = frozenset('";<>')  # must be escaped; not guessed at
_SIMPLE_BLOCKERS = frozenset('\\#+"<>;')
# BER tags of the string types a "#<hex>" value may carry (RFC 4514 section 2.4)
_NEEDS_ESCAPE = re.compile(r'[,+"\\<>;=#\x00-\x1f\x7f]|^ | $')
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*")  # a name or an OID
_BER_STRINGS = {0x04: "utf-8", 0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x1E: "utf-16-be"}


def escape_value(value: str) -> str:
    """One attribute value in RFC 4514 form (the inverse of what ``parse_dn`` reads)."""
    if not _NEEDS_ESCAPE.search(value):
        return value
    out: list[str] = []
    last = len(value) - 1
    for i, char in enumerate(value):
        if char in _ESCAPED or (char == " " and (i in (0, last))):
            out.append("\\" + char)
        elif char < " " or char == "\x7f":
            out.append(f"\\{ord(char):02X}")
        else:
            out.append(char)
    return "".join(out)


def format_rdn(rdn: Rdn) -> str:
    return "+".join(f"{kind}={escape_value(value)}" for kind, value in rdn)


def format_dn(rdns: Sequence[Rdn]) -> str:
    return ",".join(format_rdn(rdn) for rdn in rdns)


def parse_dn(dn: str) -> list[Rdn]:
    """The RDNs of ``dn``, first (leaf) to last, with values unescaped."""
    return list(_parse(dn))


def canonical_dn(dn: str) -> str:
    """``dn`` re-written in our escaping (what we send to a DC as a DN value)."""
    return format_dn(_parse(dn))


def fold(value: str) -> str:
    """A value as AD compares it: case, width and compatibility forms folded (ß = ss)."""
    if value.isascii():
        return value.lower()  # NFKC leaves ASCII alone; casefold of ASCII is lower
    folded = value
    for _ in range(4):  # casefold can leave a string NFKC changes again; stop at a fixed point
        again = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", folded).casefold())
        if again == folded:
            break
        folded = again
    return folded


@lru_cache(maxsize=65536)
def _parse(dn: str) -> tuple[Rdn, ...]:
    if not dn.strip():
        return ()
    if not (_SIMPLE_BLOCKERS & set(dn)):
        return _parse_simple(dn)
    return _Parser(dn).run()


def _parse_simple(dn: str) -> tuple[Rdn, ...]:
    """The common case (no escapes, no multi-valued RDN): split, strip, check."""
    rdns = []
    for part in dn.split(","):
        kind, sep, value = part.partition("=")
        kind = kind.strip()
        if not sep or not _valid_type(kind):
            raise DnError(f"{dn!r} is not a DN: {part.strip()!r} is not 'type=value'")
        rdns.append(((kind, value.strip(" ")),))
    return tuple(rdns)


def _valid_type(kind: str) -> bool:
    return _TYPE.fullmatch(kind) is not None


class _Parser:
    """RFC 4514 section 3, leniently (spaces around separators, escapes of any character)."""

    def __init__(self, dn: str) -> None:
        self.dn = dn
        self.i = 0

    def fail(self, what: str) -> DnError:
        return DnError(f"{self.dn!r} is not a valid DN: {what} (at character {self.i})")

    def run(self) -> tuple[Rdn, ...]:
        rdns: list[Rdn] = []
        avas: list[Ava] = []
        while True:
            kind = self._type()
            avas.append((kind, self._value()))
            if self.i >= len(self.dn):
                rdns.append(tuple(avas))
                return tuple(rdns)
            separator = self.dn[self.i]
            self.i += 1
            if separator == ",":
                rdns.append(tuple(avas))
                avas = []

    def _type(self) -> str:
        end = self.dn.find("=", self.i)
        if end < 0:
            raise self.fail("an RDN without '='")
        kind = self.dn[self.i : end].strip()
        if not _valid_type(kind):
            raise self.fail(f"{kind!r} is not an attribute type")
        self.i = end + 1
        return kind

    def _value(self) -> str:
        dn = self.dn
        while self.i < len(dn) and dn[self.i] == " ":
            self.i += 1
        if self.i < len(dn) and dn[self.i] == "#":
            ber = self._ber()
            if ber is not None:
                return ber
        out: list[str] = []
        raw = bytearray()  # consecutive hex pairs: one UTF-8 sequence
        significant = 0  # length of ``out`` up to the last character that is not a plain space
        while self.i < len(dn):
            char = dn[self.i]
            if char in ",+":
                break
            if char == "\\":
                pair = dn[self.i + 1 : self.i + 3]
                if len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX:  # noqa: PLR2004
                    raw.append(int(pair, 16))
                    self.i += 3
                    continue
                self._flush(raw, out)
                if self.i + 1 >= len(dn):
                    raise self.fail("a backslash at the end")
                out.append(dn[self.i + 1])
                significant = len(out)
                self.i += 2
                continue
            if raw:
                significant = self._flush(raw, out)
            if char in _REFUSED:
                raise self.fail(f"{char!r} must be escaped")
            out.append(char)
            if char != " ":
                significant = len(out)
            self.i += 1
        if raw:
            significant = self._flush(raw, out)
        return "".join(out[:significant])

    def _flush(self, raw: bytearray, out: list[str]) -> int:
        if raw:
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise self.fail(f"hex pairs {raw.hex()} are not UTF-8") from None
            raw.clear()
        return len(out)

    def _ber(self) -> str | None:
        """A ``#<hex>`` value (the BER encoding of a string), or None: then ``#`` is text."""
        dn = self.dn
        end = self.i + 1
        while end < len(dn) and dn[end] in _HEX:
            end += 1
        rest = dn[end:].lstrip(" ")
        digits = dn[self.i + 1 : end]
        if (rest and rest[0] not in ",+") or not digits or len(digits) % 2:
            return None
        data = bytes.fromhex(digits)
        text = _ber_string(data)
        if text is None:
            return None
        self.i = len(dn) - len(rest)
        return text


def _ber_string(data: bytes) -> str | None:
    if len(data) < 2 or data[0] not in _BER_STRINGS:  # noqa: PLR2004
        return None
    length, start = data[1], 2
    if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
        count = length & 0x7F
        length = int.from_bytes(data[2 : 2 + count], "big")
        start = 2 + count
    if start + length != len(data):
        return None
    try:
        return data[start:].decode(_BER_STRINGS[data[0]])
    except UnicodeDecodeError:
        return None
