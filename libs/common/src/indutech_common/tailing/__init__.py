"""File tailing shared by iot-ingest and the log shipping of metrics-shipper.

Files are found by glob patterns under a root directory, identified by a
fingerprint of their first bytes (not by inode: SAN/NFS remounts change
inodes, and a rename keeps the content), read line by line from a byte
offset, and followed through rotation by rename, truncation and compression
of rotated segments (``.gz`` files are fingerprinted on their decompressed
content, so ``a.log.1`` → ``a.log.1.gz`` is the same file). The caller
checkpoints :class:`FileState` values wherever it likes (iot-ingest: in a
Kafka transaction) and restores them with :meth:`FileTailer.restore`. Nothing
outside the root is read: symbolic links are never followed (``paths.py``).
"""

from indutech_common.tailing.exceptions import TailingError
from indutech_common.tailing.fingerprint import fingerprint_id, prefix_hash
from indutech_common.tailing.paths import OutsideRootError, open_under
from indutech_common.tailing.state import FileState
from indutech_common.tailing.tailer import (
    FileTailer,
    Line,
    LineKind,
    LineReader,
    SkipReason,
    WatchSpec,
)

__all__ = [
    "FileState",
    "FileTailer",
    "Line",
    "LineKind",
    "LineReader",
    "OutsideRootError",
    "SkipReason",
    "TailingError",
    "WatchSpec",
    "fingerprint_id",
    "open_under",
    "prefix_hash",
]
