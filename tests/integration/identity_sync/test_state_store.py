"""The anchor state in S3 through the common JsonObjectStore (MinIO; no directory needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from indutech_common.s3 import JSON_CONTENT_TYPE, JsonObjectStore, create_s3_client
from indutech_identity_sync.errors import StateError
from indutech_identity_sync.state import CookieState, PairState, S3StateStore, SyncState
from tests.support.stack import StackSettings


@pytest.fixture
async def objects(stack: StackSettings, unique: str) -> AsyncIterator[JsonObjectStore]:
    """The backup bucket, for one test's keys under identity-sync-tests/<unique>/."""
    async with create_s3_client(stack.s3) as client:
        store = JsonObjectStore(client, bucket=stack.s3.backup_bucket)
        try:
            yield store
        finally:
            for key in await store.list_keys(f"identity-sync-tests/{unique}/"):
                await store.delete(key)


class TestS3StateStore:
    async def test_first_start_then_round_trip(self, objects: JsonObjectStore, unique: str) -> None:
        """No object yet is a first start (empty state); what is saved loads back equal, as
        JSON with a SHA-256 the server checked."""
        store = S3StateStore(objects, key=f"identity-sync-tests/{unique}/state.json")
        assert await store.load() == SyncState()
        state = SyncState(
            pairs={"g1": PairState(onprem_guid="g1", aws_guid="a1", kind="user", rdn="Weiß")},
            onprem=CookieState(dc="CN=dc1", dirsync_cookie_hex="00ff"),
            deletes={"aws": [(1_700_000_000.0, 2)]},
        )
        await store.save(state)
        assert await store.load() == state
        head = await objects.client.head_object(
            Bucket=objects.bucket, Key=store.key, ChecksumMode="ENABLED"
        )
        assert head["ContentType"] == JSON_CONTENT_TYPE
        assert head.get("ChecksumSHA256")
        await objects.ping()

    async def test_journal_round_trip_on_s3(self, objects: JsonObjectStore, unique: str) -> None:
        """On S3 (MinIO): a snapshot, then one small entry per focused save; a worker started
        now loads the last state saved; the next snapshot's journal replaces the old one,
        whose entries are deleted."""
        key = f"identity-sync-tests/{unique}/state.json"
        store = S3StateStore(objects, key=key)
        state = SyncState(
            pairs={
                f"g{i}": PairState(onprem_guid=f"g{i}", aws_guid=f"a{i}", kind="user")
                for i in range(10)
            }
        )
        await store.save(state)
        state.pairs["g1"].attributes["title"] = ["Engineer"]
        del state.pairs["g2"]
        state.aws = CookieState(dc="CN=dc2", highest_usn=77)
        await store.save(state, {"g1", "g2"})
        assert (store.snapshots, store.entries) == (1, 1)
        assert await S3StateStore(objects, key=key).load() == state
        first = state.journal
        await store.save(state)
        await store.flush()
        assert await objects.list_keys(f"{key}.journal/") == []
        assert state.journal != first
        assert await S3StateStore(objects, key=key).load() == state
        await store.close()

    async def test_unreadable_state_names_the_object(
        self, objects: JsonObjectStore, unique: str
    ) -> None:
        """A state object that is not the state stops the load, naming it and what to check."""
        key = f"identity-sync-tests/{unique}/state.json"
        await objects.put(key, b"not json")
        with pytest.raises(
            StateError,
            match=rf"(?s)s3://{objects.bucket}/{key} is not an identity-sync state.*restore",
        ) as info:
            await S3StateStore(objects, key=key).load()
        assert "secret" not in str(info.value).lower()
