"""The persistent anchor state: objectGUID pairs, last-synced values, change cookies.

It lives in one S3 object (SSE enforced by the common client), written after
every cycle, never in a file on the pod. The state is the merge base of the
three-way comparison, which is what makes the sync loop-free: a value equal
on both sides is never written, whoever changed it.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field, ValidationError

from indutech_common.s3 import JsonObjectStore, ping_bucket
from indutech_identity_sync.config import Kind, Side
from indutech_identity_sync.errors import StateError

ROOT = "ROOT"


class PairState(BaseModel):
    """One synced object: its GUID on each side and the values last seen equal on both."""

    onprem_guid: str
    aws_guid: str
    kind: Kind
    parent: str = ROOT  # pair id of the parent OU, or ROOT (the scope root)
    rdn: str = ""  # unescaped RDN value
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    members: list[str] = Field(default_factory=list)  # pair ids


class CookieState(BaseModel):
    """Where change detection resumes on one side, and which DC issued it."""

    dc: str = ""
    dirsync_cookie_hex: str = ""
    highest_usn: int = 0


class SyncState(BaseModel):
    """Everything that survives a restart."""

    version: int = 1
    pairs: dict[str, PairState] = Field(default_factory=dict)  # pair id -> pair
    onprem: CookieState = CookieState()
    aws: CookieState = CookieState()
    # deletes applied per side as [epoch seconds of the cycle, count], within the deletion
    # guard's rolling window (older ones are dropped): the window survives a restart
    deletes: dict[Side, list[tuple[float, int]]] = Field(default_factory=dict)
    # deletes not written yet per side: pair id -> epoch seconds the delete was first seen
    # (its settle time runs from there, across restarts)
    pending_deletes: dict[Side, dict[str, float]] = Field(default_factory=dict)


class StateStore(Protocol):
    async def load(self) -> SyncState: ...

    async def save(self, state: SyncState) -> None: ...


class MemoryStateStore:
    """State kept in memory (unit tests and dry runs)."""

    def __init__(self, state: SyncState | None = None) -> None:
        self.state = state or SyncState()
        self.saves = 0

    async def load(self) -> SyncState:
        return self.state.model_copy(deep=True)

    async def save(self, state: SyncState) -> None:
        self.saves += 1
        self.state = state.model_copy(deep=True)


class S3StateStore:
    """State as one JSON object in S3 (written whole: S3 PUTs are atomic; SHA-256 checked by
    the server), through the common ``JsonObjectStore``: a missing object is a first start."""

    def __init__(self, objects: JsonObjectStore, *, key: str) -> None:
        self.objects = objects
        self.key = key

    async def ping(self) -> None:
        """Readiness: the state's bucket answers."""
        await ping_bucket(self.objects.client, self.objects.bucket)

    async def load(self) -> SyncState:
        url = self.objects.url(self.key)
        try:
            data = await self.objects.get_bytes(self.key)
        except Exception as exc:
            raise StateError(
                f"cannot read {url}: {exc}; check the S3 settings and that the worker's role "
                "may read it (the worker does not start without its state)"
            ) from exc
        if data is None:
            return SyncState()
        try:
            return SyncState.model_validate_json(data)
        except ValidationError as exc:
            raise StateError(
                f"{url} is not an identity-sync state: {exc}; check what wrote it, restore "
                "its previous version, or fix it (the worker does not start without its state)"
            ) from exc

    async def save(self, state: SyncState) -> None:
        try:
            await self.objects.put(self.key, state)
        except Exception as exc:
            raise StateError(
                f"cannot write {self.objects.url(self.key)}: {exc}; the cycle's writes were "
                "made, the next cycle saves the state again"
            ) from exc
