"""The spread of a benchmark's repeats, as the rows' notes state it: this 2-core machine is
shared and noisy, so each row keeps min / median / max of ours and of the peer."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float], digits: int = 0) -> str:
    """``min a / median b / max c`` with thousands separators and ``digits`` decimals."""
    if not values:
        raise ValueError("no repeats to summarise: a benchmark row needs at least one run")
    return (
        f"min {min(values):,.{digits}f} / median {statistics.median(values):,.{digits}f} / "
        f"max {max(values):,.{digits}f}"
    )
