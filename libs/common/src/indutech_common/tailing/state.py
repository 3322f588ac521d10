"""The checkpointable state of one file identity."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from indutech_common.tailing.exceptions import InvalidCheckpointError
from indutech_common.tailing.fingerprint import fingerprint_id


@dataclass
class FileState:
    """Where reading of one file (one fingerprint) stands.

    ``offset``/``lines`` advance as lines are handed out; ``committed_offset``/
    ``committed_lines`` only when the caller has made that progress durable
    (:meth:`FileTailer.mark_committed`), and :meth:`FileTailer.rewind` goes back
    to them. Offsets count bytes of the decompressed content for ``.gz`` files.
    """

    base: str
    fingerprint_len: int
    path: str
    generation: int = 0
    offset: int = 0
    lines: int = 0
    complete: bool = False
    committed_offset: int = 0
    committed_lines: int = 0
    committed_complete: bool = False
    updated_at: float = field(default_factory=time.time)

    @property
    def fingerprint(self) -> str:
        return fingerprint_id(self.base, self.generation)

    @property
    def dirty(self) -> bool:
        return (self.offset, self.lines, self.complete) != (
            self.committed_offset,
            self.committed_lines,
            self.committed_complete,
        )

    def to_json_bytes(self) -> bytes:
        """The checkpoint value: path, byte offset, line count and the fingerprint's recipe."""
        return json.dumps(
            {
                "fingerprint": self.fingerprint,
                "base": self.base,
                "generation": self.generation,
                "fingerprint_len": self.fingerprint_len,
                "path": self.path,
                "offset": self.offset,
                "lines": self.lines,
                "complete": self.complete,
                "updated_at": round(time.time(), 3),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json_bytes(cls, raw: bytes) -> FileState:
        """A committed state read back from a checkpoint."""
        try:
            data: dict[str, Any] = json.loads(raw)
            state = cls(
                base=str(data["base"]),
                fingerprint_len=int(data["fingerprint_len"]),
                path=str(data["path"]),
                generation=int(data["generation"]),
                offset=int(data["offset"]),
                lines=int(data["lines"]),
                complete=bool(data["complete"]),
                updated_at=float(data.get("updated_at", 0.0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidCheckpointError(f"unreadable file checkpoint: {exc}") from exc
        state.committed_offset = state.offset
        state.committed_lines = state.lines
        state.committed_complete = state.complete
        return state
