"""The status of the seven flows against the seed's thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from indutech_metrics_shipper.exposition import Exposition
from indutech_metrics_shipper.status import RULES, State, StatusBoard, render_html, render_text

NOW = 2_000_000_000.0


@dataclass(frozen=True)
class FakeTarget:
    id: str


@dataclass(frozen=True)
class FakeScrape:
    target: FakeTarget
    scraped_at: float
    text: str | None


def exposition(worker: str, *, out: float, errors: float = 0, lag: float = 1.0) -> str:
    lag_name = {
        "iot-aggregator": "indutech_iot_aggregator_ingestion_lag_seconds",
        "sql-to-redshift": "indutech_sql_to_redshift_lag_seconds",
    }.get(worker, "indutech_lag_seconds")
    return (
        "# TYPE indutech_records_out_total counter\n"
        f'indutech_records_out_total{{worker="{worker}",stream="s"}} {out}\n'
        "# TYPE indutech_errors_total counter\n"
        f'indutech_errors_total{{worker="{worker}",kind="k"}} {errors}\n'
        f"# TYPE {lag_name} gauge\n"
        f'{lag_name}{{worker="{worker}",stream="s"}} {lag}\n'
        "# TYPE indutech_last_success_timestamp_seconds gauge\n"
        f'indutech_last_success_timestamp_seconds{{worker="{worker}"}} {NOW - 5}\n'
    )


def by_worker(board: StatusBoard) -> dict[str, tuple[State, list[str]]]:
    return {s.rule.worker: (s.state, s.reasons) for s in board.statuses(clock=NOW)}


class TestStatusBoard:
    def test_green_with_throughput(self) -> None:
        board = StatusBoard()
        target = FakeTarget("t1")
        board.update([FakeScrape(target, NOW - 10, exposition("iot-to-s3", out=100))])
        board.update([FakeScrape(target, NOW, exposition("iot-to-s3", out=600))])
        [s2] = [s for s in board.statuses(clock=NOW) if s.rule.worker == "iot-to-s3"]
        assert s2.state is State.GREEN
        assert s2.throughput_per_s == 50

    def test_lag_over_the_seed_threshold_is_red_over_half_amber(self) -> None:
        board = StatusBoard()
        board.update(
            [
                FakeScrape(FakeTarget("a"), NOW, exposition("iot-to-s3", out=1, lag=601)),
                FakeScrape(FakeTarget("b"), NOW, exposition("identity-sync", out=1, lag=31)),
            ]
        )
        states = by_worker(board)
        assert states["iot-to-s3"] == (State.RED, ["lag 601 s > 600 s"])
        assert states["identity-sync"][0] is State.AMBER

    def test_any_new_error_is_red_where_the_seed_says_any_error(self) -> None:
        board = StatusBoard()
        target = FakeTarget("t")
        board.update([FakeScrape(target, NOW - 10, exposition("sql-backup", out=1, errors=2))])
        board.update([FakeScrape(target, NOW, exposition("sql-backup", out=1, errors=3))])
        assert by_worker(board)["sql-backup"] == (State.RED, ["1 new errors"])

    def test_a_target_that_stops_answering_turns_its_workers_red(self) -> None:
        board = StatusBoard()
        target = FakeTarget("pod-1")
        board.update([FakeScrape(target, NOW - 10, exposition("iot-ingest", out=1))])
        board.update([FakeScrape(target, NOW, None)])
        assert by_worker(board)["iot-ingest"] == (State.RED, ["its /metrics did not answer"])

    def test_every_flow_shown_and_those_without_a_target_grey(self) -> None:
        statuses = StatusBoard().statuses(clock=NOW)
        assert [s.rule.flow for s in statuses] == list(range(1, 8))
        assert {s.state for s in statuses} == {State.GREY}
        assert {tuple(s.reasons) for s in statuses} == {("no scrape target for this worker",)}

    def test_the_loader_is_judged_by_its_own_lag_and_any_error(self) -> None:
        """Flow 5 reads sql-to-redshift's own lag metric against 30 min; any error is red."""
        board = StatusBoard()
        target = FakeTarget("loader")
        behind = exposition("sql-to-redshift", out=1, lag=1900)
        board.update([FakeScrape(target, NOW - 10, behind)])
        assert by_worker(board)["sql-to-redshift"] == (State.RED, ["lag 1900 s > 1800 s"])
        caught_up = exposition("sql-to-redshift", out=1, errors=1, lag=0)
        board.update([FakeScrape(target, NOW, caught_up)])
        assert by_worker(board)["sql-to-redshift"] == (State.RED, ["1 new errors"])

    def test_two_pods_add_up(self) -> None:
        board = StatusBoard()
        scrapes = [
            FakeScrape(FakeTarget(f"pod-{i}"), NOW - 10, exposition("sql-backup", out=10))
            for i in range(2)
        ]
        board.update(scrapes)
        board.update([FakeScrape(s.target, NOW, exposition("sql-backup", out=20)) for s in scrapes])
        [status] = [s for s in board.statuses(clock=NOW) if s.rule.worker == "sql-backup"]
        assert status.throughput_per_s == 2  # (40 - 20) / 10 s

    def test_renderings_name_all_seven(self) -> None:
        statuses = StatusBoard().statuses(clock=NOW)
        text = render_text(statuses)
        page = render_html(statuses)
        for rule in RULES:
            assert rule.worker in text
            assert f'data-flow="{rule.flow}"' in page

    def test_the_board_reads_the_cycles_parse_not_the_text_again(self) -> None:
        """The families parsed once for the cycle are what the board reads: a text it would
        have to parse again is never looked at (this one would not even parse)."""
        board = StatusBoard()
        target = FakeTarget("t")
        shared = {"t": Exposition.parse(exposition("iot-to-s3", out=1, lag=601))}
        board.update([FakeScrape(target, NOW, "not { an exposition")], parsed=shared)
        assert by_worker(board)["iot-to-s3"] == (State.RED, ["lag 601 s > 600 s"])


class TestExposition:
    def test_samples_by_name_and_the_workers_present(self) -> None:
        text = exposition("sql-backup", out=5, errors=2) + (
            "# TYPE untyped_total untyped\n"
            'untyped_total{worker="identity-sync"} 3\n'
            'indutech_lag_seconds{worker="iot-ingest"} NaN\n'
        )
        parsed = Exposition.parse(text)
        assert [s.value for s in parsed.samples("indutech_records_out_total")] == [5.0]
        assert [s.value for s in parsed.samples("untyped_total")] == [3.0]
        assert list(parsed.samples("indutech_records_out_created")) == []
        # a worker with only NaN samples is no reading (as before the shared parse)
        assert parsed.label_values("worker") == {"sql-backup", "identity-sync"}
