"""The dashboard of the seven flows, as code."""

from __future__ import annotations

from indutech_metrics_shipper.dashboard import FLOWS, body


class TestDashboard:
    def test_a_title_per_flow_and_not_built_ones_said(self) -> None:
        widgets = body("InduTech/Flows", "eu-west-1")["widgets"]
        titles = [w["properties"]["markdown"] for w in widgets if w["type"] == "text"]
        assert [t.split(":")[0] for t in titles] == [f"### Flow {n}" for n in range(1, 8)]
        assert "not built yet" in titles[4]  # flow 5
        assert all("not built yet" not in t for i, t in enumerate(titles) if i != 4)

    def test_lag_graphs_carry_the_alarm_threshold(self) -> None:
        widgets = body("InduTech/Flows", "eu-west-1")["widgets"]
        lags = {
            w["properties"]["title"]: w["properties"]["annotations"]["horizontal"][0]["value"]
            for w in widgets
            if w["type"] == "metric" and w["properties"]["title"].endswith("lag (s)")
        }
        assert lags == {
            f"{p.worker}: lag (s)": p.lag_threshold_s for p in FLOWS if p.lag_metric is not None
        }

    def test_widgets_stay_inside_the_grid(self) -> None:
        for widget in body("InduTech/Flows", "eu-west-1")["widgets"]:
            assert widget["x"] >= 0
            assert widget["x"] + widget["width"] <= 24
