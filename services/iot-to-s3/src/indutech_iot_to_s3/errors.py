"""The exceptions of iot-to-s3, in one module.

A refused record is not an exception here: the source returns it as a
``Rejected`` verdict and it is dead-lettered with its reason.
"""

from __future__ import annotations

from indutech_common.errors import DependencyUnavailableError, IndutechError


class IotToS3Error(IndutechError):
    """Base of iot-to-s3's errors."""


class LakeError(IotToS3Error):
    """Base of the lake sink's errors."""


class S3TransientError(LakeError, DependencyUnavailableError):
    """S3 did not answer or answered 5xx/throttling: retried with backoff, never committed."""


class IntentConflictError(LakeError):
    """Another writer planned a different segment at the same start offset (a zombie owner).

    Nothing to do: the partition is recovered from its committed offset, and the
    owner that wrote the intent replays it."""
