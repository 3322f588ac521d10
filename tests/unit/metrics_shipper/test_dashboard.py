"""The dashboard of the seven flows, as code."""

from __future__ import annotations

from indutech_metrics_shipper.dashboard import FLOWS, body


class TestDashboard:
    def test_a_title_per_flow(self) -> None:
        widgets = body("InduTech/Flows", "eu-west-1")["widgets"]
        titles = [w["properties"]["markdown"] for w in widgets if w["type"] == "text"]
        assert [t.split(":")[0] for t in titles] == [f"### Flow {n}" for n in range(1, 8)]
        assert "sql-to-redshift" in titles[4]

    def test_lag_graphs_carry_the_alarm_threshold(self) -> None:
        widgets = body("InduTech/Flows", "eu-west-1")["widgets"]
        lags = {
            w["properties"]["title"]: w["properties"]["annotations"]["horizontal"][0]["value"]
            for w in widgets
            if w["type"] == "metric" and w["properties"]["title"].endswith(" (s)")
        }
        assert lags == {
            f"{p.worker}: {p.lag_label}": p.lag_threshold_s
            for p in FLOWS
            if p.lag_metric is not None
        }

    def test_the_backup_duration_and_the_loader_lag_against_the_seed(self) -> None:
        """Flow 4's graph is its run duration against 2 h, flow 5's its lag against 30 min,
        read from the names the workers export."""
        widgets = body("InduTech/Flows", "eu-west-1")["widgets"]
        graphs = {
            w["properties"]["title"]: (
                w["properties"]["metrics"][0][0]["expression"],
                w["properties"]["annotations"]["horizontal"][0]["value"],
            )
            for w in widgets
            if w["type"] == "metric" and "annotations" in w["properties"]
        }
        assert graphs["sql-backup: backup duration (s)"] == (
            "SELECT MAX(indutech_sql_backup_backup_duration_seconds) "
            "FROM \"InduTech/Flows\" WHERE worker = 'sql-backup'",
            7200,
        )
        assert graphs["sql-to-redshift: lag (s)"] == (
            "SELECT MAX(indutech_sql_to_redshift_lag_seconds) "
            "FROM \"InduTech/Flows\" WHERE worker = 'sql-to-redshift'",
            1800,
        )

    def test_widgets_stay_inside_the_grid(self) -> None:
        for widget in body("InduTech/Flows", "eu-west-1")["widgets"]:
            assert widget["x"] >= 0
            assert widget["x"] + widget["width"] <= 24
