"""The write barrier: outcomes applied in planned order, whatever order the writers finish in."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from indutech_identity_sync.barrier import Write, WriteBarrier
from indutech_identity_sync.directory import DirectoryWriter
from indutech_identity_sync.errors import DirectoryWriteError
from tests.support.fake_directory import FakeDirectory

ROOT = "OU=T,DC=corp"


class Recorder:
    """The reconciler's side of the barrier: what was applied, refused or invalid, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.results: list[object] = []
        self.errors: list[Exception] = []

    def applied(self, write: Write, result: object) -> None:
        self.events.append(("applied", write.dn))
        self.results.append(result)

    def refused(self, write: Write, error: DirectoryWriteError) -> None:
        self.events.append(("refused", write.dn))
        self.errors.append(error)

    def invalid(self, write: Write, error: ValueError) -> None:
        self.events.append(("invalid", write.dn))
        self.errors.append(error)

    def then(self, dn: str) -> Any:
        def apply(done: bool, _result: Any) -> None:
            self.events.append(("then" if done else "then-failed", dn))

        return apply


def slow_add(dn: str, fail: type[Exception] | None = None) -> Any:
    def call(writer: DirectoryWriter) -> str:
        time.sleep(random.uniform(0, 0.01))
        if fail is not None:
            raise fail(f"{dn} failed")
        return writer.add("ou", dn, {})

    return call


def barrier_with_pool(recorder: Recorder, size: int = 3) -> WriteBarrier:
    fake = FakeDirectory(ROOT)
    writers: list[DirectoryWriter] = [fake] * size
    barrier = WriteBarrier({"aws": fake, "onprem": fake}, recorder, pools={"aws": writers})
    barrier.open()
    return barrier


class TestWriteBarrier:
    def test_pool_outcomes_in_submission_order(self) -> None:
        """Twenty writes on three writers finish shuffled; their outcomes apply as planned."""
        recorder = Recorder()
        barrier = barrier_with_pool(recorder)
        dns = [f"OU=o{i},{ROOT}" for i in range(20)]
        try:
            for dn in dns:
                barrier.submit(Write("aws", "add", dn, recorder.then(dn), dn), slow_add(dn))
            assert recorder.events == []  # nothing applied before the barrier
            barrier.flush()
        finally:
            barrier.close()
        expected = [(kind, dn) for dn in dns for kind in ("applied", "then")]
        assert recorder.events == expected

    def test_connection_error_raised_after_the_rest_is_applied(self) -> None:
        """A write that lost its connection fails the flush, once every other is applied."""
        recorder = Recorder()
        barrier = barrier_with_pool(recorder)
        dns = [f"OU=o{i},{ROOT}" for i in range(5)]
        try:
            for i, dn in enumerate(dns):
                call = slow_add(dn, OSError if i == 1 else None)
                barrier.submit(Write("aws", "add", dn, recorder.then(dn), dn), call)
            with pytest.raises(OSError, match="o1"):
                barrier.flush()
        finally:
            barrier.close()
        assert [dn for kind, dn in recorder.events if kind == "applied"] == dns[:1] + dns[2:]

    def test_one_writer_applies_at_once_and_refusals_are_outcomes(self) -> None:
        """Without a pool each write is made and applied at once; a refusal is reported and
        its ``then`` learns it was not written; bad data from ``then`` is invalid."""
        recorder = Recorder()
        barrier = WriteBarrier({"onprem": FakeDirectory(ROOT)}, recorder)
        barrier.open()
        ok, refused = f"OU=a,{ROOT}", f"OU=b,{ROOT}"
        barrier.submit(Write("onprem", "add", ok, recorder.then(ok), ok), slow_add(ok))
        assert recorder.events == [("applied", ok), ("then", ok)]

        def bad_then(_done: bool, _result: Any) -> None:
            raise ValueError("not a DN")

        call = slow_add(refused, DirectoryWriteError)
        barrier.submit(Write("onprem", "add", refused, recorder.then(refused), refused), call)
        barrier.submit(Write("onprem", "add", "x", bad_then, "x"), slow_add(f"OU=c,{ROOT}"))
        barrier.close()
        assert recorder.events[2:] == [
            ("refused", refused),
            ("then-failed", refused),
            ("applied", "x"),
            ("invalid", "x"),
        ]
        assert [str(e) for e in recorder.errors] == [f"{refused} failed", "not a DN"]
