"""printable: anyone's text as one line (`one_line`), anyone's value as a message quotes it (`quoted`)."""

from __future__ import annotations

from liverctl.printable import QUOTE_LIMIT, escaped, one_line, quoted


def test_a_quoted_value_shows_control_characters_as_escapes_and_is_cut_with_an_ellipsis():
    assert quoted("liver_0") == "'liver_0'"
    assert quoted("a\x1b[2J\n\u202eb") == "'a\\x1b[2J\\n\\u202eb'"
    assert quoted(["x" * 1000]) == "['" + "x" * (QUOTE_LIMIT - 3) + "…"
    assert len(quoted("x" * 10**7)) == QUOTE_LIMIT and quoted("x" * 10**7).endswith("…")
    assert quoted({"image": 1}, 40) == "{'image': 1}"
    deep: object = 1
    for _ in range(10**5):
        deep = [deep]
    assert quoted(deep) == "a list nested too deep to show"


def test_one_line_and_quoted_cut_alike():
    text = "y" * 500
    assert one_line(text, 50) == "y" * 49 + "…" and quoted(text, 50) == "'" + "y" * 48 + "…"


def test_escaped_shows_each_control_or_invisible_character_as_its_escape_and_cuts_nothing():
    assert escaped("a\nb\tc\x1b[2J\u202ed\x7f" + "x" * 5000) == "a\\nb\\tc\\x1b[2J\\u202ed\\x7f" + "x" * 5000
    assert escaped("plain ü name.nii.gz") == "plain ü name.nii.gz"
