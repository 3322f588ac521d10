"""bench/results.json keeps what was measured: no extrapolation the measured scaling does not
support, and the spread of the repeats of ours and of the peer."""

from __future__ import annotations

import json
import re

import pytest

from bench.harness import RESULTS_JSON

RESULTS = json.loads(RESULTS_JSON.read_text())


class TestSqlBackupResults:
    def test_no_replica_count_for_40_tb(self) -> None:
        """2 replicas on one host gave ~1.0x: a replica count for 40 TB would be a guess."""
        names = [r["name"] for r in RESULTS]
        assert not [n for n in names if "40tb" in n or "replicas_for" in n]
        assert not [r["name"] for r in RESULTS if "40 TB" in r["notes"]]

    def test_rows_keep_min_median_max_of_both_sides(self) -> None:
        """Every sql-backup row states its repeats' spread, the peer's too where it has one."""
        rows = [r for r in RESULTS if r["name"].startswith("sql_backup_")]
        assert rows
        for row in rows:
            assert row["notes"].count("min ") >= (2 if row["peer"] else 1), row["name"]
            assert "median" in row["notes"], row["name"]
            assert "max" in row["notes"], row["name"]


class TestNoUnmeasuredReplicaClaims:
    ROOT = RESULTS_JSON.parents[1]
    DOCUMENTS = (
        "deploy/helm/indutech-flows/values.yaml",
        "docs/deployment.md",
        "docs/architecture.md",
        "services/sql-backup/README.md",
        "bench/narrative.md",
    )

    def paragraphs(self, document: str) -> list[str]:
        text = (self.ROOT / document).read_text()
        return [" ".join(p.replace("#", " ").split()) for p in re.split(r"\n\s*#?\s*\n", text)]

    @pytest.mark.parametrize("document", DOCUMENTS[:2])
    def test_the_operators_guides_say_the_count_is_not_measured(self, document: str) -> None:
        """The chart's sql-backup block and the initial-load step, where an operator sizes
        the 40 TB load, say that the replica count is not measured (one 2-core host, where
        2 replicas gave ~1.0x) rather than implying one."""
        mentions = [p for p in self.paragraphs(document) if "40 TB" in p]
        assert mentions
        for paragraph in mentions:
            assert "not measured" in paragraph or "not known" in paragraph, paragraph

    @pytest.mark.parametrize("document", DOCUMENTS)
    def test_no_replica_count_beside_40_tb(self, document: str) -> None:
        """No sentence puts a number of replicas on the 40 TB load."""
        for paragraph in self.paragraphs(document):
            for sentence in re.split(r"(?<=[.;:])\s", paragraph):
                if "40 TB" in sentence:
                    assert not re.search(r"\d+(\.\d+)?\s+replicas", sentence), sentence
