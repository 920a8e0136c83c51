"""Printing for a terminal of any width: a table whole when it fits, else one block of `header value` pairs per
row; lines of items broken between items, never inside one (`print_lines`; prose between its words:
`print_words`), or their last item cut to the line (`print_cut`). Used by `liverctl runs` and
`watch --once`/`--plot`.

Into a pipe or a file (a log, a notebook cell) nothing is broken or squeezed: rich would assume 80 columns
there, so tables print at their natural width and lines are left to whatever shows them.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text


def print_table(console: Console, table: Table, title: str, headers: list[str], rows: list[list[Text]]) -> None:
    """`table` whole (into a pipe or file at its natural width), or on a terminal too narrow for it, where
    rich would squeeze columns to nothing, as records: each row's first cell, then its other cells as
    `header value` pairs (empty cells left out), packed into lines of the terminal's width."""
    width = console.measure(table, options=console.options.update_width(1000)).maximum
    if width <= console.width:
        console.print(table)
        return
    if not console.is_terminal:
        Console(width=width, color_system=None, emoji=False).print(table)
        return
    console.print(Text(title, style="italic"), highlight=False)
    for first, *rest in rows:
        name = first.copy()
        name.stylize("bold")
        console.print(name, highlight=False)
        pairs = [Text.assemble((f"{header} ", "dim"), cell) for header, cell in zip(headers[1:], rest, strict=True)
                 if cell.plain.strip()]
        for line in pack(pairs, console.width, indent="  "):
            console.print(line, highlight=False, soft_wrap=False)  # rich folds a pair wider than the terminal


def pack(items: list[Text], width: int, *, indent: str = "", gap: str = "  ", hang: str | None = None) -> list[Text]:
    """`items` as lines of at most `width` cells, `gap` between items on a line, the first line starting with
    `indent`, the others with `hang` (default: `indent`); an item is never split (one wider than a line has a
    line of its own)."""
    lines: list[Text] = []
    line = Text(indent)
    for item in items:
        start = len(hang if lines and hang is not None else indent)
        if line.cell_len > start and line.cell_len + len(gap) + item.cell_len > width:
            lines.append(line)
            line = Text(indent if hang is None else hang)
            start = len(line)
        line.append_text(Text.assemble(gap if line.cell_len > start else "", item))
    if line.cell_len > len(hang if lines and hang is not None else indent) or not lines:
        lines.append(line)
    return lines


def print_lines(console: Console, lines: list[list[Text]], *, gap: str = "  ", indent: str = "",
                hang: str | None = None) -> None:
    """Lines of items: each line as it is where it fits (or into a pipe), else broken between its items (its
    first line starting with `indent`, those it is broken onto with `hang`: `pack`)."""
    for items in lines:
        joined = Text.assemble(indent, Text(gap).join(items))
        if not console.is_terminal or joined.cell_len <= console.width:
            console.print(joined, highlight=False, soft_wrap=True)
            continue
        for line in pack(items, console.width, gap=gap, indent=indent, hang=hang):
            console.print(line, highlight=False, soft_wrap=False)  # rich folds an item wider than the terminal


def print_words(console: Console, text: Text | str, *, indent: str = "", hang: str | None = None,
                style: str = "") -> None:
    """Prose (a legend, a note, a list of problems): each of its lines as it is where it fits (or into a pipe),
    else broken between its words (`print_lines`), those it is broken onto starting with `hang`; a word (a
    path, a number) is never split. `style` for a `str`."""
    text = Text(text, style=style) if isinstance(text, str) else text
    lines = [[word for word in line.split(" ") if word.plain] for line in text.split("\n")]
    print_lines(console, lines, gap=" ", indent=indent, hang=hang)


def print_cut(console: Console, head: list[Text], tail: Text, *, indent: str = "  ", least: int = 20) -> None:
    """The items of `head`, then `tail`, as one line after `indent` where it fits (into a pipe: whole). On a
    narrower terminal `head` is broken between its items (`pack`) and `tail` follows on its last line, cut with
    "…" at the line's end, or, when fewer than `least` cells of it would be left there, on a line of its own
    beneath (after twice `indent`), cut there. Only `tail` is ever cut."""
    line = Text.assemble(indent, Text(" ").join(head), " ", tail)
    if not console.is_terminal or line.cell_len <= console.width:
        console.print(line, highlight=False, soft_wrap=True)
        return
    lines = pack(head, console.width, indent=indent, gap=" ")
    if console.width - lines[-1].cell_len - 1 >= least:
        lines[-1] = Text.assemble(lines[-1], " ", tail)
    else:
        lines.append(Text.assemble(indent * 2, tail))
    lines[-1].truncate(console.width, overflow="ellipsis")
    for part in lines:
        console.print(part, highlight=False, soft_wrap=False)  # rich folds an item wider than the terminal
