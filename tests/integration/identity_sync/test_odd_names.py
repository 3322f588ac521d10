"""Names nobody here wrote, against the real DCs: every RFC 4514 special character in an RDN,
leading and trailing spaces, non-ASCII, and two names AD folds to one (Weiß / Weiss)."""

from __future__ import annotations

from indutech_identity_sync.model import make_dn
from tests.integration.identity_sync.conftest import Live


class TestOddNames:
    def test_special_names_sync_both_ways_and_stay_quiet(self, live: Live) -> None:
        """`#` inside a CN, leading `#`, leading and trailing spaces, `,+"\\<>;=` and non-ASCII:
        created on the other side at the same name, references (member, manager) included."""
        ou = live.ou("onprem", "Nord #2 ")
        lead = live.user("onprem", "#Lead", ou)
        spaced = live.user("onprem", " Space Both ", ou)
        trail = live.user("onprem", "Trail ", ou)
        odd = live.user("onprem", 'a=b;c<d>e, "f"+g\\h', ou, manager=lead)
        group = live.group("onprem", "G1 #Top", [lead, spaced, trail], ou)
        back = live.user("aws", "Zoë #1 ")
        report = live.sync()
        assert report.failed == 0
        for dn in (ou, lead, spaced, trail, odd, group):
            assert live.exists("aws", live.twin(dn, "aws")), dn
        assert live.exists("onprem", live.twin(back, "onprem"))
        members = {m.lower() for m in live.read("aws", live.twin(group, "aws"), "member")}
        expected = {live.twin(d, "aws").lower() for d in (lead, spaced, trail)}
        assert members == expected
        manager = live.read("aws", live.twin(odd, "aws"), "manager")
        assert [m.lower() for m in manager] == [live.twin(lead, "aws").lower()]
        assert live.sync().total_writes == 0  # read back, our own names compare equal
        expected_dn = make_dn("CN", "G1 #Top", make_dn("OU", "Nord #2 ", live.roots["aws"]))
        assert live.exists("aws", expected_dn)
