"""Anyone's text (a message in a run folder's files) as one printable line: `one_line`; anyone's value (a name, an
entry of their file) quoted in a message: `quoted`. Both cut with "…". An error line as a whole: `escaped`; user text
inside rich markup: `esc`. Stdlib only, so the run folder's own readers (`liverctl.runs.folder`) and the trainer use
it too."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

# A run_end message (anyone's text) is kept to this many characters: a line of `runs`, a field of its --json.
MESSAGE_LIMIT = 300
# A value quoted in an error line (a name, a file's entry) is kept to this many characters.
QUOTE_LIMIT = 80
# Control characters (newlines, ESC, C1), and the invisible ones that reorder or hide text, with the white
# space around them: one space each, so a message is one line that shows what it says.
_INVISIBLE = r"\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff"
_UNPRINTABLE = re.compile(rf"[\s{_INVISIBLE}]+")


# The same characters one by one, for `escaped`.
_CONTROL = re.compile(f"[{_INVISIBLE}]")


def escaped(text: str) -> str:
    """`text` with each control or invisible character as its escape (`\\n`, `\\x1b`, `\\u202e`), nothing cut: an
    error line that names a file whose name holds a newline or ESC stays one line and names it recognisably."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


# What rich reads as a tag, with the backslashes before it (rich.markup.escape's own pattern).
_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def esc(value: object) -> str:
    """User text (a path, an id, a config value, a message holding them) made safe inside rich markup and on a
    terminal: every command's output and training's console notes.

    `volume-a[b]c.nii.gz` prints as written instead of losing `[b]` as a bold tag, and `nope[/bold]x`
    cannot end a tag it never opened (rich's MarkupError). Unlike `rich.markup.escape` a trailing
    backslash is left alone, so the text prints exactly; never put a tag straight after it (use `Text`).
    Control and invisible characters show as their escapes (`escaped`): a file name holding a newline
    stays on its line, one holding ESC moves no cursor.
    """
    return _TAG.sub(lambda m: f"{m[1]}{m[1]}\\{m[2]}", escaped(str(value)))


def one_line(value: Any, limit: int = MESSAGE_LIMIT) -> str:
    """A message from someone's file as one printable line of at most `limit` characters (cut with "…");
    "" for None. Not escaped for markup: print it as a rich `Text`, or through `esc`."""
    text = "" if value is None else value if isinstance(value, str) else str(value)
    text = _UNPRINTABLE.sub(" ", text[: 4 * limit]).strip()  # a 10 MB message is not scanned to be cut
    return _cut(text, limit)


def first_line(message: BaseException | str, limit: int = MESSAGE_LIMIT) -> str:
    """The first line of an exception's message (or of a message) as one printable line of at most `limit`
    characters (`one_line`); "" for an empty one. torch's messages go on for lines of tensors and advice; the
    first says what is wrong. Each reader cut it by hand (`[0][:200]`), with no mark and control characters kept."""
    lines = str(message).strip().splitlines()
    return one_line(lines[0] if lines else "", limit)


def quoted(value: Any, limit: int = QUOTE_LIMIT, *, sized: bool = False) -> str:
    """Someone's value (a name, an entry or a field of their file) as a message quotes it: its repr, where control
    and invisible characters show as escapes (`'a\\x1b[2J'`), so the line stays one printable line that says what
    is there, cut to `limit` characters with "…" (a name of 200,000 characters was all of it). `sized`: a text cut
    short says how long it was (`'7_999…' (5002 characters)`), which tells a CSV's stray megabyte from a typo. A
    path is quoted as its text (`'runs/x'`, not `PosixPath('runs/x')`)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    length = len(value) if isinstance(value, str) else None
    if length is not None:
        value = value[: 4 * limit]  # a 10 MB name is not escaped to be cut
    try:
        text = repr(value)
    except RecursionError:  # a JSON document nested deeper than repr goes
        text = f"a {type(value).__name__} nested too deep to show"
    except ValueError:  # an integer of more digits than Python writes as text (a checkpoint's, a typed override)
        text = f"an integer of more than {sys.get_int_max_str_digits()} digits"
        text = text if isinstance(value, int) else f"a {type(value).__name__} holding {text}"
    shown = _cut(text, limit)
    return f"{shown} ({length} characters)" if sized and length is not None and shown != text else shown


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
