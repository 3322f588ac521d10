"""Backoff grows, is jittered and capped; retries stop at the deadline with a clear error."""

from __future__ import annotations

import random

import pytest
from structlog.testing import capture_logs

from indutech_common.errors import DependencyUnavailableError
from indutech_common.retry import Backoff, retry_async


class TestBackoff:
    def test_ceilings_grow_and_cap(self) -> None:
        """Ceilings double from initial_s and stop at max_s."""
        ceilings = Backoff(initial_s=0.1, max_s=1.0).ceilings()
        assert [round(next(ceilings), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]

    def test_delays_are_jittered_within_ceiling(self) -> None:
        """Each delay lies in [0, ceiling] and they are not all equal."""
        backoff = Backoff(initial_s=1.0, max_s=1.0)
        delays = backoff.delays(random.Random(7))
        values = [next(delays) for _ in range(50)]
        assert all(0 <= v <= 1.0 for v in values)
        assert len(set(values)) > 40

    def test_invalid_backoff(self) -> None:
        with pytest.raises(ValueError, match="initial_s"):
            Backoff(initial_s=2, max_s=1)


class TestRetry:
    async def test_recovers_after_transient_errors(self) -> None:
        """Two OSErrors then success: the result comes back and each retry is logged."""
        calls = 0

        async def flaky() -> str:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise ConnectionRefusedError("down")
            return "ok"

        with capture_logs() as logs:
            result = await retry_async(
                flaky, what="s3", backoff=Backoff(initial_s=0.001, max_s=0.01)
            )
        assert result == "ok"
        assert calls == 3
        assert [e["attempt"] for e in logs if e["event"] == "retrying"] == [1, 2]

    async def test_gives_up_with_named_dependency(self) -> None:
        """After max_attempts the error names the dependency and chains the cause."""

        async def down() -> None:
            raise ConnectionRefusedError("refused")

        with pytest.raises(
            DependencyUnavailableError, match="broker still failing after 3"
        ) as info:
            await retry_async(
                down, what="broker", backoff=Backoff(initial_s=0.001, max_s=0.001), max_attempts=3
            )
        assert isinstance(info.value.__cause__, ConnectionRefusedError)

    async def test_non_transient_error_escapes_at_once(self) -> None:
        """Errors outside retry_on are not retried."""
        calls = 0

        async def broken() -> None:
            nonlocal calls
            calls += 1
            raise ValueError("bug")

        with pytest.raises(ValueError, match="bug"):
            await retry_async(broken, what="x")
        assert calls == 1
