"""The event log: what train writes and watch/runs read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from liverctl.runs.events import EventTail, EventWriter, read_events


def test_every_line_carries_the_common_fields(tmp_path):
    with EventWriter(tmp_path, "r1") as log:
        log.emit("run_start", epoch=0, step=0, preset="demo")
        log.emit("step", epoch=0, step=5, loss=0.5, lr=1e-3)
    events = read_events(tmp_path / "events.jsonl")
    assert [e["kind"] for e in events] == ["run_start", "step"]
    for e in events:
        assert {"v", "ts", "seq", "run", "kind", "epoch", "step"} <= e.keys()
    assert [e["seq"] for e in events] == [0, 1]


def test_non_finite_numbers_become_null_plus_a_nan_event(tmp_path):
    with EventWriter(tmp_path, "r1") as log:
        log.emit("epoch_end", epoch=2, step=40, train_loss=float("nan"), volume_dice=0.9,
                 extra={"x": float("inf")})
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    # strict JSON: no NaN/Infinity tokens anywhere
    events = [json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) for line in lines]
    assert events[0]["train_loss"] is None and events[0]["extra"]["x"] is None
    assert events[0]["volume_dice"] == 0.9
    assert events[1]["kind"] == "nan"
    assert "train_loss" in events[1]["where"] and "extra.x" in events[1]["where"]


def test_resumed_writer_continues_seq(tmp_path):
    with EventWriter(tmp_path, "r1") as log:
        log.emit("note", message="a")
    with EventWriter(tmp_path, "r1") as log:
        log.emit("note", message="b")
    assert [e["seq"] for e in read_events(tmp_path / "events.jsonl")] == [0, 1]


def test_tail_holds_back_a_half_written_line_and_skips_garbage(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.poll() == [] and tail.missing
    path.write_text('{"kind": "note", "seq": 0}\n{"kind": "st')
    assert [e["kind"] for e in tail.poll()] == ["note"]
    assert not tail.missing
    with open(path, "a") as fh:
        fh.write('ep", "seq": 1}\nnot json\n[1, 2]\n{"kind": "future_kind", "seq": 2}\n')
    assert [e["kind"] for e in tail.poll()] == ["step", "future_kind"]
    assert tail.poll() == []


def test_tail_rereads_a_replaced_file_and_notices_deletion(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "note", "seq": 0}\n{"kind": "note", "seq": 1}\n')
    tail = EventTail(path)
    assert len(tail.poll()) == 2
    path.unlink()
    assert tail.poll() == [] and tail.missing
    path.write_text('{"kind": "run_start", "seq": 0}\n')
    assert [e["kind"] for e in tail.poll()] == ["run_start"]


def test_tail_rereads_a_log_truncated_and_rewritten_larger_on_the_same_inode(tmp_path):
    """A log truncated and written again, larger, between two polls keeps its inode and outgrows what was
    read: only the bytes read before tell it from an append. It was read on from the old offset, mid-line."""
    path = tmp_path / "events.jsonl"
    old = [f'{{"kind":"note","seq":{i},"message":"old {i}"}}\n' for i in range(3)]
    path.write_text("".join(old[:2]) + old[2][:10])  # a torn last line held back as well
    tail = EventTail(path)
    assert [e["message"] for e in tail.poll()] == ["old 0", "old 1"] and not tail.restarted
    inode = path.stat().st_ino
    new = [f'{{"kind":"note","seq":{i},"message":"new run, line {i}"}}\n' for i in range(6)]
    with open(path, "r+") as fh:  # in place: the same inode
        fh.truncate(0)
        fh.write("".join(new))
    assert path.stat().st_ino == inode
    assert [e.get("message") for e in tail.poll()] == [f"new run, line {i}" for i in range(6)] and tail.restarted
    with open(path, "a") as fh:
        fh.write(old[2])
    assert [e["message"] for e in tail.poll()] == ["old 2"] and not tail.restarted  # an append stays one


def test_tail_rereads_a_log_rewritten_to_the_same_size_within_one_mtime_tick(tmp_path):
    """A log rewritten in place to the same size while its mtime stays the same (two writes in one timestamp tick:
    a few ms before Linux 6.13, 1 s on ext3 or NFS) left (inode, size, mtime) as the last poll saw it: the tailer
    never looked again and showed the old run. Now a poll of a log whose mtime was that recent compares the bytes
    it read before, and reads it from its start."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind":"note","seq":0,"message":"old run"}\n')
    tail = EventTail(path)
    assert [e["message"] for e in tail.poll()] == ["old run"]
    before = path.stat()
    with open(path, "r+") as fh:  # in place, the same size
        fh.write('{"kind":"note","seq":0,"message":"new run"}\n')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # within the same tick
    assert (path.stat().st_ino, path.stat().st_size, path.stat().st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)
    assert [e["message"] for e in tail.poll()] == ["new run"] and tail.restarted


def test_an_idle_log_is_polled_with_one_stat_once_its_mtime_is_past_a_tick(tmp_path, monkeypatch):
    """The cost of catching a rewrite within one mtime tick: a log written in the last RACY_NS is opened (two
    small reads) at each poll; once its mtime is older, an idle poll is one stat again, never an open."""
    import builtins

    from liverctl.runs import events

    opened = []

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return builtins.open(*args, **kwargs)

    monkeypatch.setattr(events, "open", counting_open, raising=False)
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind":"note","seq":0}\n')
    tail = EventTail(path)
    assert len(tail.poll()) == 1 and len(opened) == 1
    assert tail.poll() == [] and len(opened) == 2  # written just now: compared again
    hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(hour_ago, hour_ago))  # a log nobody has written for an hour
    assert tail.poll() == [] and len(opened) == 3 and not tail.restarted  # the stat changed: looked at once
    for _ in range(3):
        assert tail.poll() == []
    assert len(opened) == 3  # idle: a stat each, no open
    with open(path, "a") as fh:
        fh.write('{"kind":"note","seq":1}\n')
    assert [e["seq"] for e in tail.poll()] == [1] and not tail.restarted


def test_events_module_is_standard_library_only():
    code = "import sys, liverctl.runs.events; bad = {'numpy', 'torch', 'zarr'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unreasonable_lines_are_skipped_not_raised(tmp_path):
    from liverctl.runs.events import MAX_DEPTH, parse_line

    good = '{"v":1,"ts":1.0,"seq":0,"run":"r","kind":"note","epoch":0,"step":0,"message":"ok"}'
    deep = '{"kind":"note","x":' + "[" * 100_000 + "]" * 100_000 + "}"  # RecursionError in json before
    nested_ok = '{"kind":"note","x":' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    for line in (deep, '{"kind":"note","x":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}",
                 '{"kind":"note","seq":' + "9" * 5000 + "}",  # beyond Python's int-from-text limit
                 '{"kind":"note","seq":' + str(2**63) + "}",
                 '{"kind":"note","ts":1e999}', '{"kind":"note","ts":-5}', '{"kind":"note","epoch":"3"}',
                 '{"kind":"note","step":true}', '{"kind":["note"]}', "\x00\x01\x02", "[1]", "  "):
        assert parse_line(line) is None, line[:40]
    assert parse_line(good)["message"] == "ok"
    assert parse_line(nested_ok) is not None
    assert parse_line('{"kind":"step","loss":NaN}')["loss"] != parse_line('{"kind":"step","loss":NaN}')["loss"]

    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join([good.encode(), deep.encode(), b"\xff\xfe\x00garbage", good.encode(), b""]))
    assert [e["message"] for e in read_events(path)] == ["ok", "ok"]
    tail = EventTail(path)
    assert len(tail.poll()) == 2


def test_a_full_disk_while_logging_is_one_line(tmp_path, monkeypatch):
    import errno

    import pytest

    from liverctl.errors import LiverctlError
    from liverctl.runs import events

    log = EventWriter(tmp_path, "r1")
    log.emit("note", message="kept")

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(events.os, "write", no_space)
    with pytest.raises(LiverctlError) as info:
        log.emit("note", message="lost")
    assert str(info.value).startswith(f"{tmp_path / 'events.jsonl'}: no space left on ")
    assert str(info.value).endswith("while writing the event log")
    log.close()
    assert [e["message"] for e in read_events(tmp_path / "events.jsonl")] == ["kept"]


def _fuzz_log(rng) -> bytes:
    """A log of real lines mixed with random bytes, huge numbers, deep nesting, other encodings."""
    real = [json.dumps({"v": 1, "ts": 1.0 + i, "seq": i, "run": "r", "kind": k, "epoch": i, "step": i,
                        "volume_dice": 0.5}) for i, k in enumerate(["run_start", "step", "epoch_end", "run_end"])]
    odd = ['{"kind":"epoch_end","epoch":' + "9" * int(rng.integers(19, 6000)) + "}",
           '{"kind":"run_start","config":' + "{\"a\":" * int(rng.integers(1, 5000)) + "1" + "}" * 3 + "}",
           '{"kind":"epoch_end","volume_dice":1e400,"ts":1e300}',
           '{"kind":"run_end","status":{"x":[1,2]},"best":[]}',
           '{"kind":"checkpoint","epoch":-1,"path":null}']
    out = []
    for _ in range(int(rng.integers(1, 12))):
        pick = rng.integers(4)
        if pick == 0:
            out.append(rng.bytes(int(rng.integers(0, 80))))
        elif pick == 1:
            out.append(str(rng.choice(odd)).encode())
        elif pick == 2:
            out.append(str(rng.choice(real)).encode(["utf-8", "utf-16", "latin-1"][int(rng.integers(3))]))
        else:
            line = str(rng.choice(real))
            cut = int(rng.integers(0, len(line)))
            out.append(line[:cut].encode())
    return b"\n".join(out) + (b"\n" if rng.integers(2) else b"")


def test_fuzz_reading_events_gives_dicts_never_exceptions(tmp_path):
    import numpy as np

    rng = np.random.default_rng(7)
    path = tmp_path / "events.jsonl"
    kept = 0
    for _ in range(400):
        data = _fuzz_log(rng)
        path.write_bytes(data)
        events = read_events(path)
        assert all(isinstance(e, dict) for e in events)
        polled = EventTail(path).poll()  # the same lines, less a last one still without its newline
        assert polled == events if data.endswith(b"\n") else polled in (events, events[:-1])
        kept += len(events)
    assert kept > 100


def test_line_reader_gives_the_lines_however_the_bytes_come_and_drops_those_over_its_limit():
    """`LineReader` (every reader of a log: read_events, read_history, EventTail) against the plain split: each
    line as text, or OVERLONG_LINE for one over the limit, whatever pieces its bytes come in."""
    import numpy as np

    from liverctl.runs.events import OVERLONG_LINE, LineReader

    rng = np.random.default_rng(3)
    limit = 8
    for _ in range(300):
        lines = [bytes(rng.choice(list(b"ab\xc3\xa9{}"), size=rng.integers(0, 2 * limit))) for _ in range(6)]
        data = b"\n".join(lines)
        reader, got, at = LineReader(limit), [], 0
        while at < len(data):
            size = int(rng.integers(1, 3 * limit))  # pieces longer than the limit too
            got += reader.feed(data[at:at + size])
            at += size
        want = [OVERLONG_LINE if len(line) > limit else line.decode("utf-8", errors="replace") for line in lines]
        assert got == want[:-1] and reader.pending == (want[-1] if lines[-1] else "")


def test_a_line_over_the_limit_is_skipped_unread_and_never_held(tmp_path):
    """A 200 MB line in someone's events.jsonl cost 620 MB in `runs`, `watch --once` and `report` (the whole log read,
    decoded and split, then the line parsed). No event the trainer writes comes near MAX_LINE_BYTES (1 MB): a line
    over it is skipped as unreadable, read in pieces and never held whole, finished or not. Here 16 MB lines: the
    readers' peak memory stays a few MB (it was 3 to 5 times a line)."""
    from memory_peak import traced_peak

    from liverctl.runs import events as events_module
    from liverctl.runs.history import read_history

    MAX_LINE_BYTES = getattr(events_module, "MAX_LINE_BYTES", 1 << 20)  # noqa: N806 (the module's constant)

    good = b'{"v":1,"ts":1.0,"seq":%d,"run":"r","kind":"note","epoch":0,"step":0,"message":"ok"}\n'
    huge = b'{"v":1,"ts":1.0,"seq":9,"run":"r","kind":"note","message":"' + b"x" * (16 << 20) + b'"}'
    path = tmp_path / "events.jsonl"
    path.write_bytes(good % 0 + huge + b"\n" + good % 1 + huge)  # the last one not ended yet

    events, peak = traced_peak(lambda: read_events(path))
    assert [e["seq"] for e in events] == [0, 1] and peak < 5 * MAX_LINE_BYTES
    problems: list[str] = []
    history, peak = traced_peak(lambda: read_history(path, problems))
    assert history.n_events == 2 and history.torn_last_line and peak < 5 * MAX_LINE_BYTES
    assert "events.jsonl: 1 unreadable line skipped" in problems

    tail = EventTail(path)
    events, peak = traced_peak(tail.poll)
    assert [e["seq"] for e in events] == [0, 1] and peak < 5 * MAX_LINE_BYTES
    with open(path, "ab") as fh:  # the long last line goes on, then ends: still skipped
        fh.write(b"y" * (2 * MAX_LINE_BYTES))
    assert tail.poll() == []
    with open(path, "ab") as fh:
        fh.write(b'"}\n' + good % 2)
    assert [e["seq"] for e in tail.poll()] == [2]
    just_under = b'{"kind":"note","seq":3,"m":"' + b"z" * (MAX_LINE_BYTES - 40) + b'"}'
    assert len(just_under) <= MAX_LINE_BYTES
    with open(path, "ab") as fh:
        fh.write(just_under + b"\n")
    assert [e["seq"] for e in tail.poll()] == [3]


def test_json_value_turns_every_kind_into_strict_json():
    """One rule for events, checkpoint sidecars, experiment.json and `runs --json`: each kind once, and whatever
    it gives, json.dumps(allow_nan=False) takes."""
    import datetime
    import math
    from pathlib import Path

    import numpy as np

    from liverctl.runs.events import json_value

    cases = [
        ("text", "text"), (3, 3), (True, True), (None, None), (0.25, 0.25),
        (math.nan, None), (math.inf, None), (-math.inf, None),
        ({1: "a", "b": (1, 2)}, {"1": "a", "b": [1, 2]}),
        ({3, 1, 2}, [1, 2, 3]), (frozenset({"b", 1}), ["b", 1]),  # 1 and "b" do not compare: by repr, "'b'" < "1"
        (datetime.date(1979, 5, 27), "1979-05-27"), (datetime.time(7, 32), "07:32:00"),
        (datetime.datetime(1979, 5, 27, 7, 32), "1979-05-27T07:32:00"),
        (np.float32(0.5), 0.5), (np.float64(math.nan), None), (np.int64(7), 7), (np.bool_(True), True),
        (np.array([[1.0, math.inf]]), [[1.0, None]]), (np.datetime64("2024-01-02"), "2024-01-02"),
        (b"ab\xff", "ab\\xff"), (bytearray(b"x"), "x"),
        (Path("a/b"), "a/b"),
    ]
    for value, expected in cases:
        got = json_value(value)
        assert got == expected and type(got) is type(expected), (value, got)
        json.dumps(got, allow_nan=False)
    assert type(json_value(np.float64(0.5))) is float


def test_json_value_turns_tensors_into_numbers_and_names_where_non_finite_ones_were():
    import torch

    from liverctl.runs.events import json_value

    assert json_value(torch.tensor(2.5)) == 2.5 and json_value(torch.tensor([1, 2])) == [1, 2]
    where: list[str] = []
    assert json_value({"loss": torch.tensor(float("nan")), "cv": {"folds": [0.9, float("inf")]}}, where) == {
        "loss": None, "cv": {"folds": [0.9, None]}}
    assert where == ["loss", "cv.folds[1]"]


def test_an_event_holding_a_date_or_a_numpy_number_is_written_not_a_type_error(tmp_path):
    import datetime

    import numpy as np

    with EventWriter(tmp_path, "r1") as log:
        log.emit("run_start", epoch=0, step=0, config={"data": {"when": datetime.date(2024, 1, 2)}},
                 loss=np.float32(0.5))
    (event,) = read_events(tmp_path / "events.jsonl")
    assert event["config"] == {"data": {"when": "2024-01-02"}} and event["loss"] == 0.5


def test_a_hard_linked_copy_of_a_run_writes_its_own_logs(tmp_path):
    """`cp -al runs/base runs/copy` (a cheap copy of big checkpoints; rsync --link-dest the same) shares every
    file's bytes. Resuming the copy appended its epochs to base's events.jsonl (one file, two names): `runs` then
    showed base with the copy's epochs and a best epoch base's best.pt does not hold; a submit of the copy added
    its line to base's submissions.jsonl. The copy's logs are now its own; base's stay as they were."""
    import shutil

    from liverctl.runs.folder import tidy_run_dir
    from liverctl.runs.submissions import append_line

    base, copy = tmp_path / "base", tmp_path / "copy"
    with EventWriter(base, "base") as events:
        events.emit("run_start")
    with open(base / "events.jsonl", "ab") as fh:
        fh.write(b'{"torn')  # a writer killed mid-line: the resume ends the line
    (base / "submissions.jsonl").write_text('{"csv": "base.csv"}\n')
    shutil.copytree(base, copy, copy_function=os.link)
    before = {name: (base / name).read_bytes() for name in ("events.jsonl", "submissions.jsonl")}
    tidy_run_dir(copy)
    with EventWriter(copy, "copy") as events:
        events.emit("epoch_end", epoch=1)
    append_line(copy / "submissions.jsonl", '{"csv": "copy.csv"}')
    assert {name: (base / name).read_bytes() for name in before} == before
    assert [e["kind"] for e in read_events(copy / "events.jsonl")] == ["run_start", "epoch_end"]
    assert (copy / "submissions.jsonl").read_text() == '{"csv": "base.csv"}\n{"csv": "copy.csv"}\n'
    assert all(os.stat(copy / name).st_nlink == 1 for name in before)


def test_a_resumed_writer_reads_only_the_end_of_a_long_log(tmp_path, monkeypatch):
    """`--resume` needs only the last event's seq: a 300k-step log was read whole into events for it (3.8 s,
    455 MB). Here 20k steps: a handful of lines parsed, from the end; a torn last line (a kill, ended by
    tidy_run_dir) and someone's garbage before it are passed over."""
    from liverctl.runs import events as events_module

    step = '{"v":1,"ts":1.0,"seq":%d,"run":"r","kind":"step","epoch":0,"step":%d,"loss":0.5}\n'
    path = tmp_path / "events.jsonl"
    path.write_text("".join(step % (i, i) for i in range(20_000)) + 'not json\n{"v":1,"ts":1.0,"seq":20')
    parsed = []
    real = events_module.parse_line
    monkeypatch.setattr(events_module, "parse_line", lambda line: parsed.append(line) or real(line))
    with EventWriter(tmp_path, "r") as log:
        assert log.emit("note", message="resumed")["seq"] == 20_000
    assert len(parsed) <= 3


def test_lines_from_end_are_the_lines_read_lines_gives_last_first(tmp_path, monkeypatch):
    """Every split of lines across the pieces read, lines over the limit (whole, at the start, ended or not) and
    a multi-byte character across a piece's edge: the same lines as the forward reader's, in reverse."""
    import random

    from liverctl.runs import events as events_module
    from liverctl.runs.events import LineReader, lines_from_end, read_lines

    monkeypatch.setattr(events_module, "READ_BYTES", 7)
    rng = random.Random(0)
    path = tmp_path / "log"
    for _ in range(300):
        pieces = [rng.choice(["", "a", "é", "{\"seq\":1}", "x" * rng.randint(5, 40)]) for _ in range(rng.randint(0, 8))]
        text = "".join(p + ("\n" if rng.random() < 0.6 else "") for p in pieces)
        path.write_bytes(text.encode())
        with open(path, "rb") as fh:
            reader = LineReader(limit=12)
            forward = [*read_lines(fh, reader), reader.pending]
        with open(path, "rb") as fh:
            assert list(lines_from_end(fh, limit=12)) == forward[::-1], text
