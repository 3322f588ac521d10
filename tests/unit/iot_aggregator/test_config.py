"""Settings and command line of iot-aggregator: bad values exit 2 naming the variable."""

from __future__ import annotations

import pytest

from indutech_iot_aggregator.cli import main
from tests.support.cli import help_text, refused_at_start, set_environment

VALID = {"INDUTECH_KAFKA__USERNAME": "u", "INDUTECH_KAFKA__PASSWORD": "secret-password-1"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return set_environment(monkeypatch, VALID)


class TestBadConfig:
    @pytest.mark.parametrize(
        ("variable", "value", "expected"),
        [
            ("IOT_AGGREGATOR_WINDOW_S", "5", "greater than or equal to 10"),
            ("IOT_AGGREGATOR_WINDOW_S", "7200", "less than or equal to 3600"),
            ("IOT_AGGREGATOR_LATE_POLICY", "drop", "'correction' or 'dead_letter'"),
            ("IOT_AGGREGATOR_WAREHOUSE_SCHEMA", "rt;drop", "lower-case SQL identifier"),
            ("IOT_AGGREGATOR_MAX_OPEN_KEYS", "0", "greater than 0"),
        ],
    )
    def test_exits_2_naming_the_variable(
        self,
        env: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        variable: str,
        value: str,
        expected: str,
    ) -> None:
        """A bad value stops the worker before any work, naming the variable and the rule."""
        env.setenv(variable, value)
        err = refused_at_start(main, capsys)
        assert variable in err
        assert expected in err


class TestHelp:
    def test_help_lists_every_setting_with_its_description(self) -> None:
        """``python -m indutech_iot_aggregator --help`` documents the settings and commands."""
        out = help_text("indutech_iot_aggregator")
        for text in (
            "migrate",
            "IOT_AGGREGATOR_WINDOW_S (default 60)",
            "IOT_AGGREGATOR_GRACE_S",
            "IOT_AGGREGATOR_EMIT_INTERVAL_S",
            "IOT_AGGREGATOR_IDLE_CLOSE_S",
            "IOT_AGGREGATOR_LATE_POLICY (default 'correction')",
            "IOT_AGGREGATOR_MAX_OPEN_KEYS",
            "IOT_AGGREGATOR_WAREHOUSE__DIALECT",
        ):
            assert text in out


class TestRebuildArguments:
    @pytest.mark.parametrize(
        ("argv", "expected"),
        [
            (["rebuild"], "give --from and --to"),
            (
                [
                    "rebuild",
                    "--from",
                    "2026-03-01T10:00:30+00:00",
                    "--to",
                    "2026-03-01T11:00+00:00",
                ],
                "is not a window boundary",
            ),
            (
                ["rebuild", "--from", "2026-03-01T10:00:00", "--to", "2026-03-01T11:00:00"],
                "need a UTC offset",
            ),
            (
                ["rebuild", "--from", "2026-03-01T11:00+00:00", "--to", "2026-03-01T10:00+00:00"],
                "--to must be after --from",
            ),
        ],
    )
    @pytest.mark.usefixtures("env")
    def test_a_bad_range_exits_2_before_touching_anything(
        self,
        capsys: pytest.CaptureFixture[str],
        argv: list[str],
        expected: str,
    ) -> None:
        """No lake read, no warehouse connection: the command says what to fix."""
        assert main(argv) == 2
        assert expected in capsys.readouterr().err

    @pytest.mark.parametrize("chunk", ["0", "-60", "1.5", "an hour"])
    @pytest.mark.usefixtures("env")
    def test_a_chunk_length_that_is_not_whole_seconds_exits_2(
        self, capsys: pytest.CaptureFixture[str], chunk: str
    ) -> None:
        """--chunk-s takes a positive whole number of seconds; argparse says so."""
        argv = ["rebuild", "--from", "2026-03-01T10:00+00:00", "--to", "2026-03-01T11:00+00:00"]
        with pytest.raises(SystemExit) as exited:
            main([*argv, "--chunk-s", chunk])
        assert exited.value.code == 2
        assert f"{chunk!r} is not a positive whole number of seconds" in capsys.readouterr().err
