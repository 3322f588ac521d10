"""Datums → CloudWatch Embedded Metric Format documents, within EMF's limits.

An EMF document is one JSON log event: ``_aws`` names the timestamp, the
namespace, the dimension keys and the metrics; the dimension values and the
metric values are members at the root (the EMF specification, "Embedded metric
format document structure"). CloudWatch Logs extracts the metrics from the
event when it is put into a log group.

Here one document holds the datums of one timestamp and one dimension set (a
scrape of one series set), within the limits:

- at most ``MAX_METRICS`` (100) metrics in a document, each name once (a second
  datum of the same name, or a name equal to a dimension key, opens another
  document);
- at most ``MAX_DIMENSIONS`` (30) dimension keys (the converter already drops
  series with more);
- a histogram datum as EMF's distribution object ``{"Values", "Counts", "Max",
  "Min", "Count", "Sum"}`` with at most ``MAX_VALUES`` (100) values (a wider
  datum is split into several, each in its own document: Count and Sum are its
  own part's, so CloudWatch's sums over them are exact);
- at most ``MAX_DOCUMENT_BYTES`` a document (256 KiB, the older and stricter
  event size limit).

EMF has no statistic-set form: ``HISTOGRAM_MODE=statistics`` is refused with the
EMF sink (settings).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from indutech_metrics_shipper.convert import Datum, Dimensions

MAX_METRICS = 100
MAX_DIMENSIONS = 30
MAX_VALUES = 100
MAX_DOCUMENT_BYTES = 256 * 1024
_RESERVED = "_aws"


def emf_problem(datum: Datum) -> str | None:
    """Why the datum cannot be an EMF metric, or None when it can."""
    if datum.statistics is not None:
        return "EMF has no statistic-set form: use HISTOGRAM_MODE=values with SINK=emf"
    if not datum.values and datum.value is None:
        return "a datum without a value"
    if len(datum.dimensions) > MAX_DIMENSIONS:
        return f"{len(datum.dimensions)} dimensions, EMF takes {MAX_DIMENSIONS}"
    if datum.name == _RESERVED or any(key == datum.name for key, _ in datum.dimensions):
        return "its name is also a dimension key (one root member cannot be both)"
    return None


def emf_values(datum: Datum) -> list[float | dict[str, Any]]:
    """The datum's value(s) as EMF members: a number, or distribution objects of ≤ 100 values."""
    problem = emf_problem(datum)
    if problem is not None:
        raise ValueError(f"{datum.name}: {problem}")
    if not datum.values:
        assert datum.value is not None  # noqa: S101 - emf_problem checked it
        return [datum.value]
    parts: list[float | dict[str, Any]] = []
    for start in range(0, len(datum.values), MAX_VALUES):
        values = list(datum.values[start : start + MAX_VALUES])
        counts = list(datum.counts[start : start + MAX_VALUES])
        parts.append(
            {
                "Values": values,
                "Counts": counts,
                "Max": max(values),
                "Min": min(values),
                "Count": sum(counts),
                "Sum": sum(v * c for v, c in zip(values, counts, strict=True)),
            }
        )
    return parts


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


@dataclass
class _Document:
    timestamp_ms: int
    dimensions: Dimensions
    size: int  # its rendered bytes, kept up to date as metrics are added (±1 a metric)
    metrics: dict[str, tuple[str, float | dict[str, Any]]] = field(default_factory=dict)
    sources: list[int] = field(default_factory=list)  # indexes of the datums it holds

    def accepts(self, name: str, cost: int) -> bool:
        return (
            name not in self.metrics
            and len(self.metrics) < MAX_METRICS
            and self.size + cost <= MAX_DOCUMENT_BYTES
        )

    def render(self, namespace: str) -> dict[str, Any]:
        document: dict[str, Any] = {
            _RESERVED: {
                "Timestamp": self.timestamp_ms,
                "CloudWatchMetrics": [
                    {
                        "Namespace": namespace,
                        "Dimensions": [[key for key, _ in self.dimensions]],
                        "Metrics": [
                            {"Name": name, "Unit": unit} for name, (unit, _) in self.metrics.items()
                        ],
                    }
                ],
            }
        }
        document.update(self.dimensions)
        document.update({name: value for name, (_, value) in self.metrics.items()})
        return document


@dataclass(frozen=True)
class EmfEvent:
    """One log event: its time, the document's JSON text, and which datums it holds."""

    timestamp_ms: int
    message: str
    sources: tuple[int, ...]  # indexes of the datums given to the batch (``add``)


class EmfBatch:
    """Documents built datum by datum, with their size known before rendering (so that a
    caller can stop adding before a limit)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._open: dict[tuple[int, Dimensions], list[_Document]] = {}
        self._ordered: list[_Document] = []
        self.bytes = 0  # the documents' rendered bytes
        self.first_ms: int | None = None
        self.last_ms: int | None = None

    @property
    def events(self) -> int:
        return len(self._ordered)

    def cost(self, datum: Datum) -> tuple[int, int]:
        """(bytes, events) that adding the datum would add (without adding it)."""
        added_bytes = added_events = 0
        key = (int(datum.timestamp * 1000), datum.dimensions)
        docs = self._open.get(key, [])
        sizes = {id(d): d.size for d in docs}
        for value in emf_values(datum):
            member = self._member(datum, value)
            target = next(
                (
                    d
                    for d in docs
                    if d.accepts(datum.name, member) and sizes[id(d)] + member <= MAX_DOCUMENT_BYTES
                ),
                None,
            )
            if target is None:
                added_events += 1
                added_bytes += self._base(key) + member
            else:
                sizes[id(target)] += member
                added_bytes += member
        return added_bytes, added_events

    def add(self, index: int, datum: Datum) -> None:
        key = (int(datum.timestamp * 1000), datum.dimensions)
        docs = self._open.setdefault(key, [])
        for value in emf_values(datum):
            member = self._member(datum, value)
            target = next((d for d in docs if d.accepts(datum.name, member)), None)
            if target is None:
                target = _Document(key[0], key[1], self._base(key))
                docs.append(target)
                self._ordered.append(target)
                self.bytes += target.size
            target.metrics[datum.name] = (datum.unit, value)
            target.size += member
            target.sources.append(index)
            self.bytes += member
        self.first_ms = key[0] if self.first_ms is None else min(self.first_ms, key[0])
        self.last_ms = key[0] if self.last_ms is None else max(self.last_ms, key[0])

    def render(self) -> list[EmfEvent]:
        """The documents as log events, in the order they were opened."""
        return [
            EmfEvent(
                d.timestamp_ms,
                _compact(d.render(self.namespace)),
                tuple(dict.fromkeys(d.sources)),
            )
            for d in self._ordered
        ]

    @staticmethod
    def _member(datum: Datum, value: float | dict[str, Any]) -> int:
        # "name":value, at the root and {"Name":"name","Unit":"unit"}, in _aws (with commas)
        name = len(_compact(datum.name))
        return (
            name
            + 1
            + len(_compact(value))
            + 1
            + len('{"Name":,"Unit":}')
            + name
            + len(_compact(datum.unit))
            + 1
        )

    def _base(self, key: tuple[int, Dimensions]) -> int:
        """The bytes of an empty document of this time and dimension set."""
        empty = _Document(key[0], key[1], 0).render(self.namespace)
        return len(_compact(empty))


def documents(datums: Sequence[Datum], namespace: str) -> list[EmfEvent]:
    """The datums as EMF log events, grouped by timestamp and dimension set, in first-seen
    order; every datum appears in exactly one document (or, split, in several). Raises
    ValueError for a datum ``emf_problem`` refuses (filter them first)."""
    batch = EmfBatch(namespace)
    for index, datum in enumerate(datums):
        batch.add(index, datum)
    return batch.render()
