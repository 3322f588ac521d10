"""What every worker's command line must do, checked the same way for each: settings taken
from one environment, a bad one refused at start with exit 2, ``--help`` that names them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

import pytest

from indutech_common.cli import EXIT_CONFIG
from tests.support.stack import REPO_ROOT


def set_environment(
    monkeypatch: pytest.MonkeyPatch,
    values: Mapping[str, str],
    *,
    clear_prefixes: tuple[str, ...] = (),
) -> pytest.MonkeyPatch:
    """The test's environment: ``values`` set, every variable under ``clear_prefixes`` removed
    first (so a developer's shell or the stack's settings cannot make a bad value pass)."""
    if clear_prefixes:
        for name in list(os.environ):
            if name.startswith(clear_prefixes):
                monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def refused_at_start(
    main: Callable[[list[str]], int], capsys: pytest.CaptureFixture[str], argv: Sequence[str] = ()
) -> str:
    """Run a command whose settings are bad: it must exit 2 (before any work); its stderr."""
    assert main(list(argv)) == EXIT_CONFIG
    return capsys.readouterr().err


def help_text(module: str, timeout_s: float = 60) -> str:
    """``python -m <module> --help`` in a process of its own (as an operator runs it): its
    output, after checking it exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    return result.stdout
