"""bench/results.json keeps what was measured: no extrapolation the measured scaling does not
support, and the spread of the repeats of ours and of the peer."""

from __future__ import annotations

import json

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
