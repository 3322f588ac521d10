"""The random password a user gets when the sync creates it, so that it can be enabled.

Active Directory under a password policy (AWS Managed Microsoft AD enforces one: complexity
on, 7 characters at least, fine-grained policies may ask for more) refuses to enable an
account without a password (``0000052D``), and copying the real password is out of the
question. So every user the sync creates gets, in the same add, a password drawn here from
``secrets``: 64 characters of the four classes the complexity rule knows, free of the
account's names. Nobody knows it: it is never stored, logged or audited, and it leaves this
process only inside the LDAPS add (as ``unicodePwd``); afterwards only the DC's hashes exist.
Users sign in through the forest trust with their on-prem account, never with it; a
helpdesk reset is the way to give a created account a password someone knows.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterable

LENGTH = 64  # far above any sane minimum; AD accepts up to 256 characters
# No quote or backslash: the value travels inside quotes (unicodePwd) and through tools.
SYMBOLS = "!#$%&()*+,-./:;<=>?@[]^_{|}~"
CLASSES = (string.ascii_uppercase, string.ascii_lowercase, string.digits, SYMBOLS)
ALPHABET = "".join(CLASSES)
# AD's complexity rule splits the display name at these characters and refuses a password
# that contains any part of three characters or more (the account name too, whole).
_NAME_DELIMITERS = re.compile(r"[,.\-_#\t ]+")
_MIN_TOKEN = 3


def name_tokens(names: Iterable[str]) -> set[str]:
    """The case-folded parts of ``names`` a complex password must not contain."""
    tokens: set[str] = set()
    for name in names:
        for part in [name, *_NAME_DELIMITERS.split(name)]:
            if len(part) >= _MIN_TOKEN:
                tokens.add(part.casefold())
    return tokens


def is_complex(password: str, names: Iterable[str] = ()) -> bool:
    """AD's "password must meet complexity requirements" (at least three of the four classes,
    no part of the account's names), checked with all four classes asked for."""
    if not all(any(c in chars for c in password) for chars in CLASSES):
        return False
    folded = password.casefold()
    return not any(token in folded for token in name_tokens(names))


def generate(names: Iterable[str] = (), length: int = LENGTH) -> str:
    """A new random password of ``length`` characters that meets complexity for an account
    with these ``names`` (sAMAccountName, display name, CN, …)."""
    if length < len(CLASSES):
        raise ValueError(f"a complex password needs {len(CLASSES)} characters at least")
    avoid = list(names)
    rng = secrets.SystemRandom()
    while True:  # a name part turns up by chance about once in a thousand draws
        chars = [rng.choice(chars) for chars in CLASSES]
        chars += [rng.choice(ALPHABET) for _ in range(length - len(CLASSES))]
        rng.shuffle(chars)
        password = "".join(chars)
        if is_complex(password, avoid):
            return password
