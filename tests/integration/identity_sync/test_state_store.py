"""The anchor state in S3 through the common JsonObjectStore (MinIO; no directory needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from botocore.exceptions import ClientError

from indutech_common.s3 import JSON_CONTENT_TYPE, JsonObjectStore, create_s3_client
from indutech_identity_sync.errors import StateError
from indutech_identity_sync.state import CookieState, PairState, S3StateStore, SyncState
from tests.support.iam import assume_worker_role, s3_client_as
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
        await journal_round_trip(objects, f"identity-sync-tests/{unique}/state.json")

    async def test_journal_round_trip_on_its_iam_policy_alone(
        self, stack: StackSettings, objects: JsonObjectStore, unique: str
    ) -> None:
        """The same with only the S3 rights of deploy/iam/identity-sync.json, its production
        key (identity-sync/state.json) under this test's prefix; the same credentials cannot
        touch the backups beside it or the lake."""
        prefix = f"identity-sync-tests/{unique}/"
        credentials = await assume_worker_role("identity-sync", stack, {"backup": prefix})
        async with s3_client_as(stack, credentials) as client:
            restricted = JsonObjectStore(client, bucket=stack.s3.backup_bucket)
            await restricted.ping()  # the readiness check
            await journal_round_trip(restricted, f"{prefix}identity-sync/state.json")
            with pytest.raises(ClientError, match="AccessDenied"):
                await client.get_object(
                    Bucket=stack.s3.backup_bucket, Key=f"{prefix}sql-server/manifest.json"
                )
            with pytest.raises(ClientError, match="AccessDenied"):
                await client.put_object(
                    Bucket=stack.s3.lake_bucket, Key=f"{prefix}identity-sync/x", Body=b"x"
                )
        # seen with the root keys: the snapshot is where production keeps it, and nothing else
        assert await objects.list_keys(prefix) == [f"{prefix}identity-sync/state.json"]

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


async def journal_round_trip(objects: JsonObjectStore, key: str) -> None:
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
