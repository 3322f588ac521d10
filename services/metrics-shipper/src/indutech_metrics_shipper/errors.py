"""The shipper's exceptions."""

from __future__ import annotations


class MetricsShipperError(Exception):
    """Base of the shipper's errors."""


class DatumTooLargeError(MetricsShipperError):
    """One datum alone exceeds PutMetricData's request size limit (it is dropped and counted)."""
