"""printable: anyone's text as one line (`one_line`), anyone's value as a message quotes it (`quoted`)."""

from __future__ import annotations

from pathlib import Path

from liverctl.printable import QUOTE_LIMIT, escaped, first_line, one_line, quoted


def test_a_quoted_value_shows_control_characters_as_escapes_and_is_cut_with_an_ellipsis():
    assert quoted("liver_0") == "'liver_0'"
    assert quoted("a\x1b[2J\n\u202eb") == "'a\\x1b[2J\\n\\u202eb'"
    assert quoted(["x" * 1000]) == "['" + "x" * (QUOTE_LIMIT - 3) + "…"
    assert len(quoted("x" * 10**7)) == QUOTE_LIMIT and quoted("x" * 10**7).endswith("…")
    assert quoted({"image": 1}, 40) == "{'image': 1}"
    assert quoted(Path("runs/x\n")) == "'runs/x\\n'"  # a path as its text: `--run NAME` was PosixPath('NAME')
    deep: object = 1
    for _ in range(10**5):
        deep = [deep]
    assert quoted(deep) == "a list nested too deep to show"


def test_one_line_and_quoted_cut_alike():
    text = "y" * 500
    assert one_line(text, 50) == "y" * 49 + "…" and quoted(text, 50) == "'" + "y" * 48 + "…"


def test_the_first_line_of_an_exception_is_printable_and_cut_with_a_mark():
    """Five readers took an exception's first line and cut it by hand (`[0][:200]`): no mark where it was cut,
    ESC kept; short_error (nifti's: the type and the first line) was not cut at all, and the store cut it by hand."""
    from liverctl.data.nifti import short_error

    exc = RuntimeError("size mismatch \x1b[2J" + "x" * 400 + "\n  tensor of shape [64, 3, 7, 7] ...")
    assert first_line(exc, 200) == one_line("size mismatch \x1b[2J" + "x" * 400, 200)
    assert len(first_line(exc, 200)) == 200 and first_line(exc, 200).endswith("…") and "\x1b" not in first_line(exc)
    assert first_line(RuntimeError()) == "" and first_line("one\ntwo") == "one"
    assert short_error(exc, limit=200).startswith("RuntimeError: size mismatch [2J") and len(short_error(exc, limit=200)) == 200
    assert short_error(ValueError()) == "ValueError"
    assert short_error(OSError("cannot read /d/x.nii: no"), Path("/d/x.nii")) == "OSError: cannot read the file: no"


def test_escaped_shows_each_control_or_invisible_character_as_its_escape_and_cuts_nothing():
    assert escaped("a\nb\tc\x1b[2J\u202ed\x7f" + "x" * 5000) == "a\\nb\\tc\\x1b[2J\\u202ed\\x7f" + "x" * 5000
    assert escaped("plain ü name.nii.gz") == "plain ü name.nii.gz"


def test_an_integer_too_long_for_repr_is_named_not_a_value_error():
    """Python writes no integer of more than 4300 digits as text: repr raised ValueError inside an error line."""
    assert quoted(10**5000) == "an integer of more than 4300 digits"
    assert quoted([1, 10**5000]) == "a list holding an integer of more than 4300 digits"


def test_someones_value_in_an_error_line_is_quoted_escaped_and_cut():
    """An option, a spec or a file's entry in an error line goes through `quoted`: control characters as escapes
    and the value cut with "…" (these printed ESC as it is, the whole of a 10,000-character value, or a repr cut
    mid-escape with no mark that it was cut)."""
    import pytest

    from liverctl.config import apply_overrides, check_threshold, resolve_config
    from liverctl.device import resolve_device
    from liverctl.errors import LiverctlError
    from liverctl.infer.postprocess import parse_postprocess
    from liverctl.infer.predict import parse_tta
    from liverctl.runs.folder import run_dir_for
    from liverctl.runs.table import filter_runs
    from liverctl.train.budget import parse_duration
    from liverctl.train.losses.names import parse_loss_name

    long = "\x1b[2J" + "x" * 10_000
    attempts = [
        (lambda: parse_postprocess(f"largest:{long}"), "…"),  # printed ESC as it is, and all of it
        (lambda: parse_postprocess(f"largest+fil{long}"), "…"),
        (lambda: parse_tta(long), "…"),
        (lambda: filter_runs([], [long]), "…"),
        (lambda: check_threshold(long), "…"),  # cut at 40 characters of the repr, no "…"
        (lambda: apply_overrides(resolve_config("demo"), {"train.epochs": 10**5000}), "more than 4300 digits"),
        # these quoted as '{x}': ESC as it is, and the whole value
        (lambda: apply_overrides(resolve_config("demo"), [long]), "…"),
        (lambda: parse_duration(long), "…"),
        (lambda: parse_loss_name(f"2*{long}"), "…"),
        (lambda: run_dir_for("runs", long, "demo"), "…"),
        (lambda: resolve_device(long), "…"),
    ]
    for attempt, shown in attempts:
        with pytest.raises(LiverctlError) as caught:  # the last: ValueError, then OverflowError
            attempt()
        message = str(caught.value)
        assert "\x1b" not in message and shown in message and len(message) < 400, message


def test_a_sized_quote_says_how_long_a_text_cut_short_was():
    """A CSV's token (rle, submission) says its length when cut: a stray megabyte told from a typo."""
    assert quoted("7_" + "9" * 5000, 20, sized=True) == "'7_" + "9" * 16 + "… (5002 characters)"
    assert quoted("7_0", 20, sized=True) == "'7_0'"  # whole: nothing to say
    assert quoted(["x" * 100], 20, sized=True) == "['" + "x" * 17 + "…"  # not a text: no length of its own
