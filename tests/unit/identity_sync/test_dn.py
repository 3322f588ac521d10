"""DN escaping and parsing: one pair that round-trips every RFC 4514 value, and AD's folding."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from indutech_identity_sync.dn import (
    canonical_dn,
    escape_value,
    fold,
    format_dn,
    parse_dn,
)
from indutech_identity_sync.errors import DnError
from indutech_identity_sync.model import depth_below, make_dn, normalize_dn, reparent, split_rdn

ROOT = "OU=InduTech,DC=corp,DC=indutech,DC=test"
SPECIALS = ',+"\\<>;=# '
# Any character a directory can hold (valid UTF-8: no lone surrogates), with the specials,
# spaces and a few letters that fold (ß, ﬁ, full-width) over-represented.
CHARS = st.one_of(
    st.characters(exclude_categories=["Cs"]),
    st.sampled_from([*SPECIALS, "ß", "ﬁ", "\uff21", "é", "\x00", "\n"]),
)
VALUES = st.text(CHARS, min_size=1, max_size=24)
TYPES = st.sampled_from(["CN", "OU", "DC", "cn", "uid", "2.5.4.3"])
RDNS = st.lists(
    st.lists(st.tuples(TYPES, VALUES), min_size=1, max_size=2).map(tuple), min_size=1, max_size=5
)


# no per-example deadline: the machine is shared and loaded, and a slow example is not a bug
QUICK = settings(deadline=None, max_examples=300)


class TestRoundTrip:
    @QUICK
    @given(RDNS)
    @example([(("CN", "G1 #Top"),), (("OU", "Trail "),)])
    @example([(("CN", " Space Both "),), (("CN", "#Lead"),)])
    @example([(("CN", 'a=b;c<d>e, "f"+g\\h'),)])
    @example([(("CN", "   "),)])
    def test_parse_reads_back_what_format_wrote(
        self, rdns: list[tuple[tuple[str, str], ...]]
    ) -> None:
        """Any values, every special character anywhere, leading and trailing spaces,
        non-ASCII and control characters: parse(format(x)) == x."""
        assert parse_dn(format_dn(rdns)) == rdns

    @QUICK
    @given(VALUES)
    @example("G1 #Top")
    @example("Trail ")
    def test_make_dn_and_split_rdn(self, value: str) -> None:
        """The reconciler's own pair: a target DN built from a name gives the name back."""
        dn = make_dn("CN", value, ROOT)
        assert split_rdn(dn) == ("CN", value, ROOT)
        assert depth_below(dn, ROOT) == 1
        assert canonical_dn(dn) == dn

    @QUICK
    @given(RDNS)
    def test_normalize_is_idempotent(self, rdns: list[tuple[tuple[str, str], ...]]) -> None:
        """A normalised DN normalises to itself (mirrors index both forms)."""
        norm = normalize_dn(format_dn(rdns))
        assert normalize_dn(norm) == norm


class TestWhatDcsAndPeopleWrite:
    @pytest.mark.parametrize(
        ("dn", "value"),
        [
            ("CN=G1 #Top,OU=X", "G1 #Top"),  # unescaped '#' inside: legal (RFC 4514)
            ("CN=G1 \\#Top,OU=X", "G1 #Top"),  # as Samba returns it
            ("CN=Trail\\ ,OU=X", "Trail "),  # escaped trailing space kept
            ("CN=Trail\\20,OU=X", "Trail "),
            ("CN=\\ lead,OU=X", " lead"),
            ("CN=a\\3Db,OU=X", "a=b"),  # Samba's hex form of '='
            ("CN=a=b,OU=X", "a=b"),
            ("CN=x\\3By\\<z\\>,OU=X", "x;y<z>"),
            ("CN=a\\c3\\a9\\2Cb,OU=X", "aé,b"),  # hex pairs decoded together as UTF-8
            ("cn = Jo\\, Smith\\+1 , OU=X", "Jo, Smith+1"),  # spaces around separators
            ("CN=#04024869,OU=X", "Hi"),  # the BER form of a value
            ("CN=#Lead,OU=X", "#Lead"),  # not hex: a '#' by itself
        ],
    )
    def test_read(self, dn: str, value: str) -> None:
        assert split_rdn(dn) == ("CN", value, "OU=X")

    @pytest.mark.parametrize(
        "dn",
        ["CN=a\\", "CN=a;b,OU=X", 'CN="quoted",OU=X', "CN=a,OU", "CN=a,,OU=X", "1x=a", "CN=\\ff"],
    )
    def test_refused_with_the_dn_named(self, dn: str) -> None:
        with pytest.raises(DnError, match="not a"):
            parse_dn(dn)

    def test_escaping(self) -> None:
        """Specials everywhere, spaces at the ends, control characters as hex pairs."""
        assert escape_value(" a#b=c ") == "\\ a\\#b\\=c\\ "
        assert escape_value("x\ny\x00") == "x\\0Ay\\00"
        assert escape_value("Zoë") == "Zoë"


class TestFolding:
    def test_names_ad_compares_equal(self) -> None:
        """Case, ß/ss and width fold together, as AD compares names."""
        assert fold("Weiß") == fold("WEISS") == fold("weiss")
        assert fold("\uff21\uff42\uff43") == fold("abc")  # full-width
        assert normalize_dn("CN=Weiß,OU=X") == normalize_dn("cn=weiss,ou=x")
        assert normalize_dn("cn=A\\2C B,ou=X") == normalize_dn("CN=a\\, b,OU=x")

    def test_reparent(self) -> None:
        """A child's DN follows its renamed parent, however the parent was spelled."""
        child = make_dn("CN", "Kid #1", make_dn("OU", "Old ", ROOT))
        old_parent = "ou=old\\20," + ROOT.lower()
        assert reparent(child, old_parent, "OU=New,DC=x") == "CN=Kid \\#1,OU=New,DC=x"
