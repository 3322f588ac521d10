"""The random initial password of a created user: long, of four classes, free of the
account's names, different every time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from indutech_identity_sync import initial_password


class TestComplexity:
    @pytest.mark.parametrize(
        ("password", "names", "complex_"),
        [
            ("Zz9!qwertyu", [], True),
            ("zz9!qwertyu", [], False),  # no upper case
            ("ZZ9!QWERTYU", [], False),  # no lower case
            ("Zz!?qwertyu", [], False),  # no digit
            ("Zz9Xqwertyu", [], False),  # no symbol
            ("Zz9!jSmithQ", ["jsmith"], False),  # the account name, any case
            ("Zz9!SMITHq", ["John Smith"], False),  # a part of the display name
            ("Zz9!ohn-q", ["O'Neil-Ohn"], False),  # parts split at a hyphen
            ("Zz9!AlNgq", ["Al Ng"], True),  # parts under three characters do not count
        ],
    )
    def test_ad_rule(self, password: str, names: list[str], complex_: bool) -> None:
        """Four classes and no part of three characters or more of the account's names."""
        assert initial_password.is_complex(password, names) is complex_

    def test_name_tokens(self) -> None:
        """The whole name and its parts split at AD's delimiters, case-folded."""
        assert initial_password.name_tokens(["Ann-Marie O'Neil, Jr."]) == {
            "ann-marie o'neil, jr.",
            "ann",
            "marie",
            "o'neil",
        }


class TestGenerate:
    def test_long_complex_and_never_twice(self) -> None:
        """64 characters, complex, without quote or backslash, all different."""
        made = [initial_password.generate(["Pat Doe", "pdoe"]) for _ in range(500)]
        assert {len(p) for p in made} == {initial_password.LENGTH}
        assert len(set(made)) == len(made)
        assert all(initial_password.is_complex(p, ["Pat Doe", "pdoe"]) for p in made)
        assert not any('"' in p or "\\" in p for p in made)

    @given(names=st.lists(st.text(min_size=1, max_size=30), max_size=4))
    def test_free_of_any_names(self, names: list[str]) -> None:
        """Whatever the names, the password meets complexity for them."""
        assert initial_password.is_complex(initial_password.generate(names), names)

    def test_short_length_still_has_every_class(self) -> None:
        """Even at four characters each class is present; fewer is refused."""
        assert initial_password.is_complex(initial_password.generate(length=4))
        with pytest.raises(ValueError, match="4 characters"):
            initial_password.generate(length=3)
