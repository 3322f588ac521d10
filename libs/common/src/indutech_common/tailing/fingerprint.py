"""Content fingerprints: a file's identity is the hash of its first bytes.

The fingerprint covers the first ``length`` bytes of the (decompressed)
content; ``length`` is fixed when the file is first seen (``fingerprint_bytes``,
or fewer for a small file whose first complete lines are all there is) and is
stored with the checkpoint so the same prefix is hashed again after a restart.
A file truncated and rewritten with the same first bytes gets a new
*generation*, hence a new id, so ids derived from (fingerprint, offset) never
collide between the two contents.
"""

from __future__ import annotations

import hashlib

ID_HEX_CHARS = 40


def prefix_hash(prefix: bytes) -> str:
    """The hash of a file's first bytes (generation 0 id)."""
    return hashlib.sha256(prefix).hexdigest()[:ID_HEX_CHARS]


def fingerprint_id(base: str, generation: int) -> str:
    """The id of one generation of a file: the prefix hash itself for generation 0."""
    if generation == 0:
        return base
    return hashlib.sha256(f"{base}#{generation}".encode()).hexdigest()[:ID_HEX_CHARS]
