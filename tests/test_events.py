"""The event log: what train writes and watch/runs read."""

from __future__ import annotations

import json
import subprocess
import sys

from liverctl.events import EventTail, EventWriter, read_events


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


def test_events_module_is_standard_library_only():
    code = "import sys, liverctl.events; bad = {'numpy', 'torch', 'zarr'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
