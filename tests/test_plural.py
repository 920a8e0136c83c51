"""`liverctl.plural`: a count and its noun, singular for one."""

from liverctl.plural import agree, plural


def test_plural_says_one_thing_in_the_singular():
    assert [plural(n, "case") for n in (0, 1, 2)] == ["0 cases", "1 case", "2 cases"]
    assert plural(1, "test case") == "1 test case" and plural(3, "matrix", "matrices") == "3 matrices"


def test_agree_picks_the_word_for_one_or_for_many():
    assert [agree(n, "is", "are") for n in (0, 1, 2)] == ["are", "is", "are"]
