"""The datum buffer is bounded: when full, the oldest go, and they are counted."""

from __future__ import annotations

import pytest

from indutech_metrics_shipper.convert import Datum
from indutech_metrics_shipper.sinks import DatumBuffer


def datums(start: int, count: int) -> list[Datum]:
    return [Datum("m", (), float(i), value=float(i)) for i in range(start, start + count)]


class TestDatumBuffer:
    def test_full_buffer_drops_the_oldest_and_counts_them(self) -> None:
        buffer = DatumBuffer(max_datums=5)
        assert buffer.extend(datums(0, 3)) == 0
        assert buffer.extend(datums(3, 4)) == 2
        assert [d.value for d in buffer.snapshot()] == [2, 3, 4, 5, 6]
        assert buffer.dropped == 2
        assert len(buffer) == 5

    def test_remove_first_takes_what_was_delivered(self) -> None:
        buffer = DatumBuffer(max_datums=10)
        buffer.extend(datums(0, 4))
        buffer.remove_first(3)
        assert [d.value for d in buffer.snapshot()] == [3]

    def test_a_buffer_needs_room(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            DatumBuffer(max_datums=0)
