"""The anchor state's format: a snapshot and a journal of the pairs each focused cycle
touched; what a save wrote is what the next load returns, and old state objects load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from indutech_identity_sync.errors import StateError
from indutech_identity_sync.state import (
    CookieState,
    JournalEntry,
    MemoryObjects,
    MemoryStateStore,
    PairState,
    S3StateStore,
    SyncState,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "identity"
KEY = "identity-sync/state.json"


def user(pid: str, title: str = "Operator") -> PairState:
    return PairState(
        onprem_guid=pid, aws_guid=f"aws-{pid}", kind="user", attributes={"title": [title]}
    )


def state_of(count: int) -> SyncState:
    return SyncState(pairs={f"u{i}": user(f"u{i}") for i in range(count)})


async def reloaded(objects: MemoryObjects) -> SyncState:
    """What a worker started now would load (a new store over the same objects)."""
    return await S3StateStore(objects, key=KEY).load()


class FailingObjects(MemoryObjects):
    """Puts fail while ``failing`` is set (an S3 outage, or an answer lost on the way)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    async def put(
        self, key: str, document: BaseModel | bytes, *, create_only: bool = False
    ) -> bool:
        if self.failing:
            raise ConnectionError("S3 went away")
        return await super().put(key, document, create_only=create_only)


class TestJournal:
    async def test_focused_save_writes_only_the_changed_pairs(self) -> None:
        """After the snapshot, a save given the changed pair ids writes one small entry
        holding those pairs and the cookies; the next load is the state saved."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(100)
        await store.save(state)
        assert objects.puts == [KEY]
        state.pairs["u7"].attributes["title"] = ["Engineer"]
        state.pairs["new"] = user("new")
        state.onprem = CookieState(dc="CN=dc1", dirsync_cookie_hex="beef")
        state.aws.highest_usn = 99
        await store.save(state, {"u7", "new"})
        entry_key = objects.puts[-1]
        assert entry_key == f"{KEY}.journal/{state.journal}/00000001.json"
        entry = JournalEntry.model_validate_json(objects.data[entry_key])
        assert set(entry.pairs) == {"u7", "new"}
        assert entry.removed == []
        assert len(objects.data[entry_key]) < len(objects.data[KEY]) / 20
        assert await reloaded(objects) == state

    async def test_removed_pairs_and_delete_bookkeeping_survive(self) -> None:
        """A pair removed in a focused cycle is gone after a restart; the deletion guard's
        window and pending deletes are the last ones saved."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(10)
        await store.save(state)
        del state.pairs["u3"]
        state.deletes = {"aws": [(1_700_000_000.0, 1)]}
        state.pending_deletes = {"onprem": {"u4": 1_700_000_100.0}}
        await store.save(state, {"u3"})
        state.pending_deletes = {}
        await store.save(state, set())  # a cycle that changed no pair: cookies, bookkeeping
        loaded = await reloaded(objects)
        assert "u3" not in loaded.pairs
        assert loaded == state

    async def test_entries_apply_in_order(self) -> None:
        """A pair changed by several cycles loads with the value of the last one."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(10)
        await store.save(state)
        for title in ("a", "b", "c"):
            state.pairs["u1"].attributes["title"] = [title]
            await store.save(state, {"u1"})
        assert (await reloaded(objects)).pairs["u1"].attributes["title"] == ["c"]

    async def test_full_cycle_starts_a_new_journal_and_the_old_one_goes(self) -> None:
        """A save without changed ids (a full cycle) writes a snapshot naming a new journal;
        the old journal's entries are deleted off the cycle's path and never applied."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(10)
        await store.save(state)
        first = state.journal
        state.pairs["u1"].attributes["title"] = ["x"]
        await store.save(state, {"u1"})
        await store.save(state)
        assert state.journal != first
        await store.flush()
        assert [k for k in objects.data if k != KEY] == []
        assert await reloaded(objects) == state

    async def test_full_journal_or_large_change_writes_a_snapshot(self) -> None:
        """At journal_max_entries entries, or when a cycle touched half the pairs or more,
        the save writes the whole state instead of an entry."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY, journal_max_entries=2)
        state = state_of(10)
        await store.save(state)
        await store.save(state, {"u1"})
        await store.save(state, {"u2"})
        assert store.snapshots == 1
        await store.save(state, {"u3"})
        assert store.snapshots == 2
        await store.save(state, {f"u{i}" for i in range(5)})
        assert store.snapshots == 2
        await store.save(state, {f"u{i}" for i in range(6)})
        assert store.snapshots == 3
        assert await reloaded(objects) == state

    async def test_first_save_after_a_load_is_a_snapshot(self) -> None:
        """A restarted worker appends to no journal it did not start: its first save is a
        snapshot, even when given changed ids."""
        objects = MemoryObjects()
        state = state_of(10)
        await S3StateStore(objects, key=KEY).save(state)
        store = S3StateStore(objects, key=KEY)
        loaded = await store.load()
        await store.save(loaded, {"u1"})
        assert store.snapshots == 1
        assert objects.puts[-1] == KEY


class TestCrashes:
    async def test_failed_save_raises_and_the_next_save_is_a_snapshot(self) -> None:
        """A PUT that fails (or whose answer was lost) fails the save with what to expect;
        the next save writes the whole state, so an entry that landed anyway is never
        applied to it."""
        objects = FailingObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(10)
        await store.save(state)
        objects.failing = True
        state.pairs["u1"].attributes["title"] = ["lost?"]
        with pytest.raises(StateError, match="next cycle saves the whole state"):
            await store.save(state, {"u1"})
        objects.failing = False
        state.pairs["u2"].attributes["title"] = ["after"]
        await store.save(state, {"u2"})
        assert store.snapshots == 2
        assert await reloaded(objects) == state

    async def test_a_crash_between_saves_loads_the_last_save(self) -> None:
        """What a cycle changed in memory but did not save is not in the loaded state: the
        state of the last save, as when the whole state was one object."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(10)
        await store.save(state)
        state.pairs["u1"].attributes["title"] = ["saved"]
        await store.save(state, {"u1"})
        saved = state.model_copy(deep=True)
        state.pairs["u1"].attributes["title"] = ["not saved"]  # the process dies here
        assert await reloaded(objects) == saved

    async def test_gap_stops_the_replay_with_a_warning(self) -> None:
        """An entry missing (deleted by hand): the entries after it are not applied, the load
        says so, and the state is that before the gap (the full cycle at start repairs it)."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(10)
        await store.save(state)
        for i, title in enumerate(("one", "two", "three"), start=1):
            state.pairs[f"u{i}"].attributes["title"] = [title]
            await store.save(state, {f"u{i}"})
        del objects.data[f"{KEY}.journal/{state.journal}/00000002.json"]
        with capture_logs() as logs:
            loaded = await reloaded(objects)
        gap = next(e for e in logs if e["event"] == "state_journal_gap")
        assert gap["log_level"] == "warning"
        assert gap["found"].endswith("00000003.json")
        assert loaded.pairs["u1"].attributes["title"] == ["one"]
        assert loaded.pairs["u2"].attributes["title"] == ["Operator"]
        assert loaded.pairs["u3"].attributes["title"] == ["Operator"]

    async def test_second_writer_of_the_same_entry_is_refused(self) -> None:
        """Two stores appending to one journal (two replicas on one key): the second write of
        an entry is refused, naming the object and the fix."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(10)
        await store.save(state)
        twin = S3StateStore(objects, key=KEY)
        twin.journal, twin.seq = store.journal, store.seq
        await store.save(state, {"u1"})
        with pytest.raises(StateError, match="one replica per state key"):
            await twin.save(state, {"u2"})

    async def test_unreadable_entry_names_it(self) -> None:
        """An entry that is not one stops the load, naming the object and what to do."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(3)
        await store.save(state)
        await store.save(state, {"u1"})
        entry_key = f"{KEY}.journal/{state.journal}/00000001.json"
        objects.data[entry_key] = b"{}"
        with pytest.raises(
            StateError,
            match=rf"(?s)memory://{KEY}\.journal/.*journal entry.*delete it and the entries after",
        ):
            await reloaded(objects)


class TestMigration:
    async def test_version_1_state_loads_and_is_rewritten_as_a_snapshot(self) -> None:
        """A state object written before the journal existed (version 1, recorded sample)
        loads unchanged; the first save writes it as a version 2 snapshot with a journal."""
        raw = (SAMPLES / "state_v1.json").read_bytes()
        assert json.loads(raw)["version"] == 1
        objects = MemoryObjects()
        objects.data[KEY] = raw
        store = S3StateStore(objects, key=KEY)
        state = await store.load()
        expected = {k: v for k, v in json.loads(raw).items() if k != "version"}
        assert {k: v for k, v in state.model_dump(mode="json").items() if k in expected} == (
            expected
        )
        assert state.pairs["1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"].members == [
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
        ]
        await store.save(state, {"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"})
        written = json.loads(objects.data[KEY])
        assert (written["version"], bool(written["journal"])) == (2, True)
        assert await reloaded(objects) == state

    async def test_journal_left_behind_a_version_1_writer_is_ignored(self) -> None:
        """After a roll-back, a version 1 worker rewrites the snapshot without the journal
        field: the entries of the journal before it are never applied to that snapshot."""
        objects = MemoryObjects()
        store = S3StateStore(objects, key=KEY)
        state = state_of(3)
        await store.save(state)
        state.pairs["u1"].attributes["title"] = ["stale"]
        await store.save(state, {"u1"})
        old_writer = json.loads(objects.data[KEY])  # what a version 1 worker writes back
        old_writer.pop("journal")
        old_writer["pairs"]["u1"]["attributes"]["title"] = ["newer"]
        objects.data[KEY] = json.dumps(old_writer).encode()
        assert (await reloaded(objects)).pairs["u1"].attributes["title"] == ["newer"]


class TestMemoryStore:
    async def test_memory_store_counts_saves_and_round_trips(self) -> None:
        """The in-memory store (tests, dry runs) keeps the same snapshot and journal."""
        store = MemoryStateStore(state_of(4))
        state = await store.load()
        state.pairs["u0"].attributes["title"] = ["m"]
        await store.save(state)
        await store.save(state, {"u0"})
        assert store.saves == 2
        assert (store.snapshots, store.entries) == (1, 1)
        assert await MemoryStateStore().load() == SyncState()
        assert await S3StateStore(store.memory, key=store.key).load() == state
