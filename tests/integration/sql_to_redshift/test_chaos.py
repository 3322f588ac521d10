# ruff: noqa: S608 - SQL of identifiers the test made itself
"""The guarantee under SIGKILL: ``sql-to-redshift load`` and ``rebuild`` killed at random
moments (at least 10 kills) leave after every kill each table whole as of its last night
(the staged rows are the ones its ledger row recorded), and the run that finally completes
gives exactly the source: facts joined the same way, SCD2 history with each change once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dotenv import dotenv_values

from tests.integration.sql_to_redshift.conftest import DAY0, Backups, Names, fetch, night
from tests.integration.sql_to_redshift.test_nightly import (
    CUSTOMER_TRACKED,
    PRODUCT_TRACKED,
    TABLES,
    assert_models_equal_source,
    dimension,
    scd2_expected,
    tracked,
)
from tests.support.stack import REPO_ROOT, StackSettings, stack_env_file

KILLS = 10


def loader_env(stack: StackSettings, names: Names) -> dict[str, str]:
    """A loader subprocess: the stack's INDUTECH_* plus this test's names."""
    stack_env = {k: v for k, v in dotenv_values(stack_env_file()).items() if v is not None}
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SQL_TO_REDSHIFT_", "INDUTECH_"))
        },
        **stack_env,
        "SQL_TO_REDSHIFT_BACKUP_PREFIX": names.erp.prefix,
        "SQL_TO_REDSHIFT_DATABASE": stack.erp.database,
        "SQL_TO_REDSHIFT_SOURCE_SCHEMA": names.erp.schema,
        "SQL_TO_REDSHIFT_RAW_SCHEMA": names.raw,
        "SQL_TO_REDSHIFT_MODEL_SCHEMA": names.models,
        "SQL_TO_REDSHIFT_LOGGING__LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


def start(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "indutech_sql_to_redshift", command],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def first_night(process: subprocess.Popen[bytes], log: Path, seen: int) -> bool:
    """Wait until the process applied its first night (True) or exited (False)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(log.read_bytes)
        if b"night_applied" in text[seen:]:
            return True
        if process.poll() is not None:
            return False
        await asyncio.sleep(0.05)
    tail = await asyncio.to_thread(log.read_text)
    raise AssertionError(f"no night applied in 120 s: {tail[-3000:]}")


async def assert_whole(stack: StackSettings, names: Names) -> int:
    """Every table with a head holds exactly the rows its last ledger row recorded; the
    ledger is a strictly increasing chain of nights per table. Returns the nights applied."""
    try:
        heads = await fetch(
            stack,
            f"SELECT s.source_table, l.table_rows FROM {names.raw}._load_state AS s "
            f"JOIN {names.raw}._load_ledger AS l ON l.source_table = s.source_table "
            "AND l.day = s.day AND l.kind = s.kind",
        )
        ledger = await fetch(
            stack, f"SELECT source_table, day FROM {names.raw}._load_ledger ORDER BY 1, 2"
        )
    except Exception:
        return 0
    states = await fetch(stack, f"SELECT count(*) FROM {names.raw}._load_state")
    assert states == [(len(heads),)], "every head has its ledger row"
    for table, rows in heads:
        assert await fetch(stack, f"SELECT count(*) FROM {names.raw}.{table}") == [(rows,)]
    for table in {t for t, _ in ledger}:
        days = [d for t, d in ledger if t == table]
        assert days == sorted(set(days)), f"{table}: nights out of order or twice"
    return len(ledger)


def rng() -> random.Random:
    seed = int(time.time())
    print(f"random seed {seed}")
    return random.Random(seed)


class TestChaos:
    @pytest.mark.slow
    @pytest.mark.timeout(600)
    async def test_sigkill_mid_load_leaves_whole_nights_and_the_rerun_is_exact(
        self, stack: StackSettings, names: Names, tmp_path: Path
    ) -> None:
        backups = Backups(stack, names, TABLES)
        # small chunks: many parts per night, so kills land between and inside copies
        backups.settings = backups.settings.model_copy(update={"chunk_rows": 150})
        await backups.full()
        customers = [(DAY0, await tracked(stack, names.erp.schema, "customers", CUSTOMER_TRACKED))]
        products = [(DAY0, await tracked(stack, names.erp.schema, "products", PRODUCT_TRACKED))]
        for n in (1, 2, 3):
            await backups.delta(n)
            customers.append(
                (night(n), await tracked(stack, names.erp.schema, "customers", CUSTOMER_TRACKED))
            )
            products.append(
                (night(n), await tracked(stack, names.erp.schema, "products", PRODUCT_TRACKED))
            )
        env = loader_env(stack, names)
        log = tmp_path / "loader.log"
        random_ = rng()
        kills, completed, rounds, rebuilt = 0, 0, 0, 0
        lifetimes: list[tuple[str, float]] = []
        applied: list[int] = []
        while kills < KILLS:
            rounds += 1
            assert rounds < 4 * KILLS, f"only {kills} kills in {rounds} rounds: {lifetimes}"
            # after a run that completed, a rebuild gives the next ones work again
            command = "rebuild" if rounds % 3 == 0 or completed > rebuilt else "load"
            rebuilt += command == "rebuild"
            seen = log.stat().st_size if log.exists() else 0
            process = start(command, env, log)
            if rounds % 4 == 0:
                lifetime = random_.uniform(2.0, 8.0)  # during start-up, migrate or planning
                await asyncio.sleep(lifetime)
            elif await first_night(process, log, seen):
                lifetime = random_.uniform(0.0, 1.5)  # while nights are being applied
                await asyncio.sleep(lifetime)
            else:
                lifetime = 0.0
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(process.wait, 10)
                kills += 1
                lifetimes.append((command, round(lifetime, 2)))
            else:
                assert process.returncode == 0, log.read_text()[-3000:]
                completed += 1
            applied.append(await assert_whole(stack, names))
        # the kills landed while nights were being applied, not only during start-up
        assert any(0 < n < 4 * len(TABLES) for n in applied), (applied, log.read_text()[-4000:])
        print(
            f"{kills} kills in {rounds} rounds ({completed} completed): {lifetimes}; "
            f"nights: {applied}"
        )

        process = start("load", env, log)
        assert await asyncio.to_thread(process.wait, 300) == 0, log.read_text()[-3000:]
        assert await assert_whole(stack, names) >= 4 * len(TABLES)
        await assert_models_equal_source(stack, names, night(3))
        history = await dimension(stack, names, "dim_customer", "customer_id", CUSTOMER_TRACKED)
        assert history == scd2_expected(customers)
        history = await dimension(stack, names, "dim_product", "product_id", PRODUCT_TRACKED)
        assert history == scd2_expected(products)
        verify = start("verify", env, log)
        assert await asyncio.to_thread(verify.wait, 120) == 0, log.read_text()[-3000:]
