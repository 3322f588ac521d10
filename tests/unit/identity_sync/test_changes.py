"""The change feed's notification path: a cycle between polls collects the objects the
DCs notified, in scope, without touching a connection; the poll stays due on its clock."""

from __future__ import annotations

from pathlib import Path

from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import SIDES, Side, load_mapping
from indutech_identity_sync.sources.changes import ChangeFeed
from indutech_identity_sync.sources.ldap import notified_object
from indutech_identity_sync.state import SyncState

EXAMPLE = Path(__file__).resolve().parents[3] / "services/identity-sync/mapping.example.toml"
ONPREM_ROOT = "OU=InduTech,DC=corp,DC=indutech,DC=test"
AWS_ROOT = "OU=AWS,DC=aws,DC=indutech,DC=test"


def feed() -> ChangeFeed:
    settings = {
        side: LdapSettings(
            url="ldaps://dc.invalid", bind_dn="CN=sync", password="pw", base_dn="DC=x"
        )
        for side in SIDES
    }
    return ChangeFeed(load_mapping(EXAMPLE), settings)


class TestNotificationPath:
    def test_collect_between_polls_returns_what_was_notified_in_scope(self) -> None:
        """Without a poll, collect returns the notified GUIDs in the scope (or mirrored),
        once, and needs no connection (no DirSync, no uSNChanged search)."""
        changes = feed()
        changes.notified("onprem", "g1", f"CN=Ann,{ONPREM_ROOT}")
        changes.notified("onprem", "g2", "CN=Out,OU=Elsewhere,DC=corp,DC=indutech,DC=test")
        changes.notified("aws", "a1", f"CN=Bob,{AWS_ROOT}")
        changes.notified("aws", "a2", "CN=Moved,OU=Gone,DC=aws,DC=indutech,DC=test")
        mirrored: dict[Side, dict[str, object]] = {"onprem": {}, "aws": {"a2": object()}}
        got = changes.collect({}, SyncState(), mirrored, poll=False)
        assert got == {"onprem": {"g1"}, "aws": {"a1", "a2"}}
        assert changes.collect({}, SyncState(), mirrored, poll=False) == {
            "onprem": set(),
            "aws": set(),
        }

    def test_poll_due_on_its_clock_or_after_a_nameless_notification(self) -> None:
        """The searches are due every poll interval since the last; a notification that
        names no object makes the next collect poll."""
        changes = feed()
        assert changes.poll_due(60)  # never polled
        changes.last_poll = float("inf")  # as if it had just polled
        assert not changes.poll_due(60)
        changes.notified("aws", "", f"CN=Bob,{AWS_ROOT}")
        assert changes.poll_due(60)

    def test_notification_entry_names_the_object(self) -> None:
        """Each notification entry becomes (objectGUID text, DN); one without a GUID, ""."""
        raw_guid = bytes.fromhex("1ca1656b032ffd419d25f236b19b8cdd")
        entry = {"dn": f"CN=Ann,{AWS_ROOT}", "raw_attributes": {"objectGUID": [raw_guid]}}
        assert notified_object(entry) == (
            "6b65a11c-2f03-41fd-9d25-f236b19b8cdd",
            f"CN=Ann,{AWS_ROOT}",
        )
        assert notified_object({"dn": f"CN=Bob,{AWS_ROOT}", "raw_attributes": {}}) == (
            "",
            f"CN=Bob,{AWS_ROOT}",
        )
