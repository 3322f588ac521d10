"""The change feed without a DC: what a cycle collects (the objects found or notified, in
scope, with the cursors that cover them), and what one probe of the USN leads to."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from indutech_common.settings import LdapSettings
from indutech_identity_sync.config import SIDES, IdentitySyncSettings, Side, load_mapping
from indutech_identity_sync.sources.changes import ChangeFeed, search_for
from indutech_identity_sync.sources.ldap import notified_object, usn_windows
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
    def test_collect_returns_what_was_notified_in_scope(self) -> None:
        """collect returns the notified GUIDs in the scope (or mirrored), once, and needs no
        connection (the watch searches on its own)."""
        changes = feed()
        changes.notified("onprem", "g1", f"CN=Ann,{ONPREM_ROOT}")
        changes.notified("onprem", "g2", "CN=Out,OU=Elsewhere,DC=corp,DC=indutech,DC=test")
        changes.notified("onprem", "", f"CN=Nameless,{ONPREM_ROOT}")  # the probe finds it
        changes.notified("aws", "a1", f"CN=Bob,{AWS_ROOT}")
        changes.notified("aws", "a2", "CN=Moved,OU=Gone,DC=aws,DC=indutech,DC=test")
        mirrored: dict[Side, dict[str, object]] = {"onprem": {}, "aws": {"a2": object()}}
        state = SyncState()
        state.aws.highest_usn = 42
        got = changes.collect(state, mirrored)
        assert got == {"onprem": {"g1"}, "aws": {"a1", "a2"}}
        assert changes.collect(state, mirrored) == {"onprem": set(), "aws": set()}
        assert state.aws.highest_usn == 42  # the watch found nothing: the cursor stays

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


class TestProbe:
    @pytest.mark.parametrize(
        ("searched_to", "highest", "lookup_max", "expected"),
        [
            (500, 500, 1000, "none"),  # nothing committed since the last search
            (500, 501, 1000, "lookup"),
            (500, 1500, 1000, "lookup"),  # the largest gap looked up
            (500, 1501, 1000, "scan"),  # a bulk change: one scan is cheaper
            (500, 501, 0, "scan"),  # lookups off
            (500, 499, 1000, "scan"),  # lower than before (a DC restored from a backup)
            (0, 0, 1000, "none"),
        ],
    )
    def test_search_only_when_the_usn_moved(
        self, searched_to: int, highest: int, lookup_max: int, expected: str
    ) -> None:
        """An unmoved USN means no search; a small gap a lookup, a large one a scan."""
        assert search_for(searched_to, highest, lookup_max) == expected

    def test_usn_windows_cover_the_gap_once(self) -> None:
        """The USNs above the last search up to the probe's, each in exactly one window of at
        most 100 (one equality term each)."""
        windows = usn_windows(500, 751)
        assert [(w.start, w.stop) for w in windows] == [(501, 601), (601, 701), (701, 752)]
        assert [u for w in windows for u in w] == list(range(501, 752))
        assert usn_windows(500, 500) == []
        assert [list(w) for w in usn_windows(7, 8)] == [[8]]


class TestProbeSettings:
    def settings(self, **fields: object) -> IdentitySyncSettings:
        ldap = {"bind_dn": "CN=sync", "password": "pw", "base_dn": "DC=corp"}
        return IdentitySyncSettings.model_validate(
            {
                "onprem": {**ldap, "url": "ldaps://dc1:636"},
                "aws": {**ldap, "url": "ldaps://dc2:636"},
                "mapping_file": EXAMPLE,
                "s3": {"sse": "AES256"},
                **fields,
            }
        )

    def test_defaults_probe_often_and_skip_notifications(self) -> None:
        """The probe every 0.2 s, lookups up to 1,000 USNs, notifications off (measured)."""
        settings = self.settings()
        assert settings.probe_interval_s == 0.2
        assert settings.usn_lookup_max == 1000
        assert not settings.change_notifications

    @pytest.mark.parametrize("interval", [0.0, 0.01, 61])
    def test_probe_interval_bounded(self, interval: float) -> None:
        """Below 50 ms the probes would keep a DC busy; above a minute the delay is long."""
        with pytest.raises(ValidationError, match="probe_interval_s"):
            self.settings(probe_interval_s=interval)
