"""One scrape's text, parsed once and shared by the converter and the status board.

Parsing is the largest part of a cycle's CPU (prometheus-client's parser: about
0.65 s for the benchmark's 10,000 series, 36,100 lines), so each text is parsed
exactly once per cycle and both readers take the families from here: the
converter walks them all, the status board looks up only the few its rules name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import parser
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample


class _Target(Protocol):
    @property
    def id(self) -> str: ...


class Scraped(Protocol):
    """What is read of a scrape (sources.Scrape)."""

    @property
    def target(self) -> _Target: ...

    @property
    def scraped_at(self) -> float: ...

    @property
    def text(self) -> str | None: ...


@dataclass(frozen=True)
class Exposition:
    """The families of one text exposition, in order and by name."""

    families: tuple[Metric, ...]
    _by_name: dict[str, list[Metric]] = field(init=False, repr=False, compare=False)
    _labels: dict[str, frozenset[str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, list[Metric]] = {}
        for family in self.families:
            # a name may come back if its samples were not contiguous in the text
            by_name.setdefault(family.name, []).append(family)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_labels", {})

    @classmethod
    def parse(cls, text: str) -> Exposition:
        """The text parsed by prometheus-client's own parser (no hand-written parser)."""
        # through the module, not a name bound at import: the parser as installed
        return cls(tuple(parser.text_string_to_metric_families(text)))

    def samples(self, name: str) -> Iterator[Sample]:
        """The samples named ``name``, found by family name (a counter's ``_total``
        samples live in the family without the suffix; untyped ones under their own name)."""
        seen: set[str] = set()
        for family_name in (name, name.removesuffix("_total")):
            if family_name in seen:
                continue
            seen.add(family_name)
            for family in self._by_name.get(family_name, ()):
                for sample in family.samples:
                    if sample.name == name:
                        yield sample

    def label_values(self, label: str) -> frozenset[str]:
        """Every value ``label`` takes on a sample with a finite value (NaN and ±Inf are no
        reading); one pass over the samples, then cached."""
        values = self._labels.get(label)
        if values is None:
            found: set[str] = set()
            for family in self.families:
                for sample in family.samples:
                    value = sample.labels.get(label)
                    if value is not None and math.isfinite(sample.value):
                        found.add(value)
            values = self._labels[label] = frozenset(found)
        return values


def parse_scrapes(scrapes: Iterable[Scraped]) -> dict[str, Exposition]:
    """Each answered scrape's text parsed once, by target id (CPU-bound: the worker runs
    this in a thread so that its health endpoint answers during a large cycle)."""
    return {
        scrape.target.id: Exposition.parse(scrape.text)
        for scrape in scrapes
        if scrape.text is not None
    }
