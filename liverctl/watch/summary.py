"""The run summary as text: shared by the TUI's widgets and by `watch --once` (plain rich output)."""

from __future__ import annotations

import time

from rich import box
from rich.table import Table
from rich.text import Text

from liverctl.plural import plural
from liverctl.runs.events import unreadable_note
from liverctl.watch.state import EpochRow, NanRecord, RunState

STATUS_STYLE = {
    "waiting": "dim",
    "running": "bold green",
    "stalled": "bold black on yellow",
    "completed": "bold green",
    "interrupted": "bold yellow",
    "time_limit": "bold yellow",
    "failed": "bold white on red",
    "nan_abort": "bold white on red",
}
NAN_STYLE = "bold red"
# (header, EpochRow attribute, digits) of the metric columns, in table order (short: 80 columns must do).
EPOCH_COLUMNS = (
    ("train loss", "train_loss", 4),
    ("val loss", "val_loss", 4),
    ("vol Dice", "volume_dice", 4),
    ("slice Dice", "slice_dice", 4),
    ("glob Dice", "global_dice", 4),
)


def fmt_number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 10 ** -digits):
        return f"{value:.{max(1, digits - 2)}e}"
    return f"{value:.{digits}f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def fmt_clock(ts: float | None) -> str:
    return "—" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


def where_when(epoch: int | None, step: int | None, ts: float | None, total_epochs: int | None = None) -> str:
    parts = [f"epoch {epoch}" + (f"/{total_epochs}" if total_epochs else "") if epoch is not None else ""]
    parts.append(f"step {step}" if step is not None else "")
    parts.append(f"at {fmt_clock(ts)}" if ts is not None else "")
    return ", ".join(p for p in parts if p) or "time unknown"


def status_text(state: RunState) -> Text:
    status = state.status
    return Text(f" {status.upper()} ", style=STATUS_STYLE.get(status, "bold"))


def status_detail(state: RunState) -> Text | None:
    """Why the run stands where it does: stalled for how long, or the `run_end` message."""
    if state.stalled:
        return Text(
            f"stalled? nothing written for {fmt_duration(state.silent_s)} (usual epoch "
            f"{fmt_duration(state.median_epoch_s())})",
            style="yellow",
        )
    if state.end and state.end.get("message"):
        return Text(state.end["message"], style="dim")
    return None


def progress(state: RunState) -> float | None:
    """Fraction of the planned training done (epochs done plus the current epoch's steps), or None."""
    if not state.total_epochs:
        return None
    if state.end is not None and state.end.get("status") == "completed":
        return 1.0
    done = float(len(state.epochs))
    in_epoch = state.step_in_epoch()
    if in_epoch is not None and state.steps_per_epoch:
        done += in_epoch / state.steps_per_epoch
    return max(0.0, min(1.0, done / state.total_epochs))


def progress_bar(fraction: float, width: int) -> Text:
    filled = round(fraction * width)
    text = Text("━" * filled, style="bold green" if fraction >= 1 else "bold magenta")
    text.append("━" * (width - filled), style="grey35")
    text.append(f" {fraction * 100:3.0f}%")
    return text


def best_text(state: RunState) -> str:
    """'0.9432 (epoch 5, 12m ago)': the best volume Dice and when it came."""
    best = state.best
    if not best:
        return "—"
    row = state.epochs.get(best[0])
    when = f", {fmt_duration(max(0.0, state.clock() - row.ts))} ago" if row and row.ts is not None else ""
    return f"{best[1]:.4f} (epoch {best[0]}{when})"


def gpu_text(state: RunState) -> str | None:
    if state.gpu_mem_gb is None:
        return None
    peak = f" / peak {state.gpu_mem_peak_gb:.1f}" if state.gpu_mem_peak_gb is not None else ""
    return f"{state.gpu_mem_gb:.1f}{peak} GB"


def header_text(state: RunState, notice: str | None = None, *, bar_width: int = 24) -> Text:
    """Two lines: who the run is (device, precision, GPU memory, status) and where it stands (progress
    bar, epoch and step, ETA, samples/s, best volume Dice and when); a third for a notice about the file."""
    return Text("\n").join(Text("  ").join(items) for items in header_lines(state, notice, bar_width=bar_width))


def header_lines(state: RunState, notice: str | None = None, *, bar_width: int = 24) -> list[list[Text]]:
    """`header_text`'s lines as items (a label and its value, the status, the bar), for a narrow terminal
    to break between them (`liverctl.narrow.print_lines`)."""

    def pair(label: str, value: str, style: str = "") -> Text:
        return Text.assemble((label, "dim"), " ", (value, style))

    who = [Text(state.name or "?", style="bold"), status_text(state)]
    for label, value in (("preset", state.preset), ("device", state.device), ("amp", state.amp),
                         ("GPU", gpu_text(state))):
        if value is None and label == "GPU":
            continue
        who.append(pair(label, value or "—"))
    if state.resumed_from:
        who.append(pair("resumed from", state.resumed_from))
    if state.has_nan:
        who.append(Text(f" {len(state.nans)} NaN ", style="bold white on red"))
    where: list[Text] = []
    fraction = progress(state)
    if fraction is not None:
        where.append(progress_bar(fraction, bar_width))
    done = len(state.epochs)
    in_epoch = state.step_in_epoch()
    if in_epoch is not None:
        where.append(Text.assemble(pair("epoch", f"{done + 1}/{state.total_epochs or '?'}"), " ",
                                   pair("step", f"{in_epoch}/{state.steps_per_epoch}")))
    else:
        where.append(pair("epochs done", f"{done}/{state.total_epochs or '?'}"))
    where.append(pair("ETA", fmt_duration(state.eta_s())))
    where.append(pair("elapsed", fmt_duration(state.elapsed_s())))
    rate = f"{state.samples_per_s:.1f}" if state.samples_per_s is not None else "—"
    where.append(Text.assemble(rate, (" samples/s", "dim")))
    where.append(pair("best volume Dice", best_text(state), "bold"))
    lines = [who, where]
    detail = status_detail(state)
    if detail:
        lines.append([detail])
    if notice:
        lines.append([Text(notice, style="bold yellow")])
    return lines


def _nan_line(label: str, rec: NanRecord, total_epochs: int | None) -> str:
    # The epoch counted as the table counts it (see NanRecord.epoch_ordinal), not the event's own field.
    when = where_when(rec.epoch_ordinal, rec.step, rec.ts, total_epochs)
    line = f"{label} {rec.where} · {when} · guard: {rec.action}"
    news = message_news(rec)
    return line + (f" · {news}" if news else "")


def message_news(rec: NanRecord) -> str:
    """What a NaN record's message adds to its line: the trainer's starts by saying what was non-finite and at
    which step (`non-finite loss at step 1475; 1 rollbacks did not help, stopping`), which the line says
    already; that part is left out, so that on a narrow screen the rest (what the guard did about it) fits."""
    said = f"non-finite {rec.where} at step {rec.step}"
    if rec.step is None or not rec.message.startswith(said):
        return rec.message
    rest = rec.message[len(said):]
    return rest[2:] if rest.startswith("; ") else rec.message if rest else ""


DISMISS_HINT = "[d: dismiss]"


def nan_banner_lines(state: RunState, width: int, rows: int = 3) -> list[str]:
    """The NaN banner on a narrow screen: at most `rows` lines of at most `width` cells, in which what is least
    needed goes first. The head line keeps "⚠ NaN DETECTED", the count and DISMISS_HINT (the guard's counts go
    first, then the per-action counts are cut with "…"); each record line keeps where and at which step and what
    the guard did (its time of day goes first, then its epoch, then the "guard:" label), then its message,
    continued on a line left spare (a single record) or else cut with "…" at the line's end."""
    if not state.nans:
        return []
    counts = ", ".join(f"{action} {n}" for action, n in state.nan_counts().items())
    guard = ", ".join(f"{k} {v}" for k, v in state.guard_counts().items())
    room = width - len(DISMISS_HINT) - 2
    head = f"⚠ NaN DETECTED: {plural(len(state.nans), 'record')}: {counts}"
    if guard and len(head) + len(f" · guard: {guard}") <= room:
        head += f" · guard: {guard}"
    lines = [f"{_cut(head, room):<{room}}  {DISMISS_HINT}" if room >= 20 else _cut(f"{head}  {DISMISS_HINT}", width)]
    records = [("first: ", state.nans[0])] + ([("latest:", state.nans[-1])] if len(state.nans) > 1 else [])
    spare = max(0, rows - len(lines) - len(records))
    for label, rec in records:
        when = [f"epoch {rec.epoch_ordinal}" + (f"/{state.total_epochs}" if state.total_epochs else "")
                if rec.epoch_ordinal is not None else "", "" if rec.step is None else f"step {rec.step}",
                "" if rec.ts is None else f"at {fmt_clock(rec.ts)}"]
        action = f"guard: {rec.action}"
        news = message_news(rec)
        for shorter in range(4):  # drop the time of day, then the epoch, then the "guard:" label
            if shorter == 1:
                when[2] = ""
            elif shorter == 2 and when[1]:
                when[0] = ""
            elif shorter == 3:
                action = rec.action
            place = ", ".join(w for w in when if w) or "time unknown"
            line = f"{label} {rec.where} · {place} · {action}"
            if len(line) + len(f" · {news}") * bool(news) <= width:
                break
        if not news:
            lines.append(_cut(line, width))
            continue
        line += f" · {news}"
        while len(line) > width and spare:  # the message on into a spare line, broken at a space
            cut = line.rfind(" ", 0, width + 1)
            cut = width if cut <= width // 2 else cut
            lines.append(line[:cut])
            line, spare = "  " + line[cut:].lstrip(), spare - 1
        lines.append(_cut(line, width))
    return lines


def _cut(line: str, width: int) -> str:
    """`line` cut to `width` cells with "…" at its end."""
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"


def nan_banner_text(state: RunState, *, dismiss_hint: bool = False) -> str:
    """What the NaN banner says: the counts, what the guard did, the first occurrence and the latest."""
    if not state.nans:
        return ""
    counts = ", ".join(f"{action} {n}" for action, n in state.nan_counts().items())
    guard = ", ".join(f"{k} {v}" for k, v in state.guard_counts().items())
    lines = [
        f"⚠ NaN DETECTED: {plural(len(state.nans), 'record')}: {counts}"
        + (f" · guard: {guard}" if guard else "")
        + (f"   {DISMISS_HINT}" if dismiss_hint else ""),
        _nan_line("first: ", state.nans[0], state.total_epochs),
    ]
    if len(state.nans) > 1:
        lines.append(_nan_line("latest:", state.nans[-1], state.total_epochs))
    return "\n".join(lines)


def epoch_cells(state: RunState, row: EpochRow) -> list[Text]:
    """One table row: epoch, the losses and Dice figures (NaN in red), seconds, a star on the best."""
    touched = row.nan_seen or bool(row.nan_fields)
    cells = [Text(str(row.epoch) + (" !" if touched else ""), style=NAN_STYLE if touched else "")]
    for _, attr, digits in EPOCH_COLUMNS:
        value = getattr(row, attr)
        if attr in row.nan_fields:
            cells.append(Text("NaN", style=NAN_STYLE))
        else:
            cells.append(Text(fmt_number(value, digits), style="bold" if attr == "volume_dice" else ""))
    cells.append(Text("—" if row.seconds is None else f"{row.seconds:.0f}"))
    cells.append(Text("★", style="bold yellow") if row.is_best else Text(""))
    return cells


EPOCH_HEADERS = ("epoch", *(h for h, _, _ in EPOCH_COLUMNS), "sec", "best")


def current_epoch_cells(state: RunState) -> list[Text] | None:
    """A last, dim row for the unfinished epoch: mean step loss so far, NaN count in red, time so far."""
    current = state.current_epoch()
    if current is None:
        return None
    status = state.shown_status
    tag = {"running": "running", "stalled": "stalled", "waiting": "running"}.get(status, "stopped")
    cells = [Text(f"{current.number} {tag}", style=NAN_STYLE if current.n_nan else "italic")]
    if current.n_nan:
        cells.append(Text(f"NaN ×{current.n_nan}", style=NAN_STYLE))
    else:
        cells.append(Text("~" + fmt_number(current.mean_loss), style="italic"))
    cells += [Text("…", style="dim") for _ in EPOCH_COLUMNS[1:]]
    stop = state.end["ts"] if state.end and state.end.get("ts") else state.clock()
    so_far = None if current.started_ts is None else max(0.0, stop - current.started_ts)
    cells.append(Text("—" if so_far is None else f"{so_far:.0f}", style="italic"))
    cells.append(Text(""))
    return cells


# Fits 80 columns with short run names; what matters least is on the right, where a narrow table crops.
COMPARE_HEADERS = ("run", "status", "NaN", "epochs", "best vol Dice", "slice Dice", "min val loss")


def compare_cells(state: RunState, *, primary: bool = False) -> list[Text]:
    """One row of the runs table: status, NaN count, the best epoch and its figures, the lowest val loss."""
    best = state.best
    row = state.epochs.get(best[0]) if best else None
    val = [r.val_loss for r in state.rows if r.val_loss is not None]
    status = state.status
    return [
        Text(("▶ " if primary else "  ") + (state.name or "?"), style="bold" if primary else ""),
        Text(status, style=STATUS_STYLE.get(status, "")),
        Text(str(len(state.nans)), style=NAN_STYLE if state.nans else "dim"),
        Text(f"{len(state.epochs)}/{state.total_epochs or '?'}"),
        Text(f"{best[1]:.4f} (ep {best[0]})" if best else "—", style="bold"),
        Text(fmt_number(row.slice_dice if row else None)),
        Text(fmt_number(min(val) if val else None)),
    ]


def compare_table(states: list[RunState]) -> Table:
    """The runs side by side (`watch --plot` with several runs): the best figures of each."""
    table = Table(title="runs", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for header in COMPARE_HEADERS:
        table.add_column(header, justify="left" if header == "run" else "right", no_wrap=True)
    for i, state in enumerate(states):
        table.add_row(*compare_cells(state, primary=i == 0))
    return table


def checkpoint_lines(state: RunState, limit: int = 3) -> list[str]:
    """The latest checkpoint of each kind (last/best/interrupt), newest first."""
    latest: dict[str, object] = {}
    for ck in state.checkpoints:
        latest[ck.which] = ck
    out = []
    for ck in sorted(latest.values(), key=lambda c: c.ts or 0, reverse=True)[:limit]:
        dice = f" · Dice {ck.volume_dice:.4f}" if ck.volume_dice is not None else ""
        name = ck.path.replace("\\", "/").rsplit("/", 1)[-1] or ck.path  # the run folder is on screen already
        out.append(f"{name} epoch {ck.epoch if ck.epoch is not None else '?'}{dice}")
    return out


def info_text(state: RunState) -> Text:
    """Checkpoints, the latest note and anything ignored (events of unknown kinds, unreadable lines), under the
    table."""
    text = Text()
    text.append("checkpoints ", style="dim")
    cks = checkpoint_lines(state)
    if cks:  # "(11)" beside the two files listed read as 11 checkpoints: it counts the saves
        text.append(f"({plural(len(state.checkpoints), 'save')}) " + "; ".join(cks))
    elif state.status in ("running", "waiting"):
        text.append("none yet")
    else:  # "(0 saves) none yet" of a run that had ended and will save none
        text.append("none: the run ended without saving one")
    if state.notes:
        ts, message = state.notes[-1]
        text.append("\nnote ", style="dim")
        text.append(f"{fmt_clock(ts)} {message}")
    if state.unknown_kinds:
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(state.unknown_kinds.items()))
        text.append("\nignored events of unknown kinds: ", style="dim")
        text.append(kinds, style="dim")
    if state.unreadable_lines:  # as `runs` says it
        text.append("\n" + unreadable_note(state.unreadable_lines), style="yellow")
    return text


def epoch_rows(state: RunState) -> list[list[Text]]:
    """The epochs table's rows: one per finished epoch, then the unfinished one."""
    rows = [epoch_cells(state, row) for row in state.rows]
    current = current_epoch_cells(state)
    return rows + ([current] if current is not None else [])


def epochs_table(state: RunState) -> Table:
    table = Table(title="epochs", title_justify="left", show_edge=False, pad_edge=False)
    for header in EPOCH_HEADERS:
        table.add_column(header, justify="right")
    for cells in epoch_rows(state):
        table.add_row(*cells)
    return table


def steps_text(state: RunState) -> Text | None:
    """One line on the step events: how many, the last and lowest finite loss, the non-finite steps."""
    if not state.steps:
        return None
    losses = [v for v in state.loss_points() if v is not None]
    return Text(
        f"steps logged {len(state.steps)}, last loss {fmt_number(losses[-1] if losses else None)}, "
        f"min loss {fmt_number(min(losses) if losses else None)}, non-finite steps {len(state.nan_steps)}"
    )


def exit_code(state: RunState) -> int:
    """`watch --once` exit status: 1 when the run has a NaN, failed or ended before its first event, else 0."""
    return 1 if state.has_nan or state.failed or state.ended_before_first_event else 0
