"""Errors of the lake sink."""

from __future__ import annotations

from indutech_common.errors import DependencyUnavailableError, IndutechError


class LakeError(IndutechError):
    """Base of the lake sink's errors."""


class S3TransientError(LakeError, DependencyUnavailableError):
    """S3 did not answer or answered 5xx/throttling: retried with backoff, never committed."""


class IntentConflictError(LakeError):
    """Another writer planned a different segment at the same start offset (a zombie owner)."""
