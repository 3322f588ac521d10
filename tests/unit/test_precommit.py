"""The pre-commit hooks run the same checks as `make lint`, so the two cannot drift."""

from __future__ import annotations

import re

import yaml

from tests.support.stack import REPO_ROOT


def lint_recipe() -> list[str]:
    makefile = (REPO_ROOT / "Makefile").read_text()
    match = re.search(r"^lint:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.MULTILINE)
    assert match, "the Makefile has no lint target"
    prerequisites = makefile[match.start() : makefile.index("\n", match.start())]
    commands = [line.strip().lstrip("@") for line in match.group(1).splitlines()]
    targets = prerequisites.split(":", 1)[1].split("##")[0].split()
    return [c.replace("$(MAKE)", "make") for c in commands] + [
        f"make --no-print-directory {t}" for t in targets if t != "setup"
    ]


class TestPreCommit:
    def test_hooks_are_the_lint_target(self) -> None:
        """Every command of `make lint` is a hook, and every hook is in `make lint`."""
        config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())
        entries = sorted(hook["entry"] for repo in config["repos"] for hook in repo["hooks"])
        assert entries == sorted(lint_recipe())
