"""liverctl/suggest.py: the one home of 'did you mean ...?' hints."""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

import pytest

import liverctl
from liverctl.errors import LiverctlError
from liverctl.suggest import did_you_mean, hint_for, nearest

ROOT = Path(liverctl.__file__).parent


def test_names_equally_near_keep_the_order_given_where_difflib_breaks_ties_z_to_a():
    modes = ["hflip", "flips", "vflip", "hflip+vflip", "none"]  # most used first
    assert difflib.get_close_matches("flip", modes, n=1) == ["vflip"]  # what 'submit --tta flip' suggested
    assert nearest("flip", modes) == ["hflip"]
    assert nearest("flip", modes, n=2, ties_only=True) == ["hflip", "flips"]
    assert nearest("flip", modes, n=3) == ["hflip", "flips", "vflip"]


def test_nearest_first_and_ties_only_leaves_out_a_farther_second():
    assert nearest("hfilp", ["flips", "hflip", "vflip"], n=2) == ["hflip", "flips"]
    assert nearest("hfilp", ["flips", "hflip", "vflip"], n=2, ties_only=True) == ["hflip"]


def test_nothing_below_the_cutoff_and_each_name_once():
    assert nearest("zzz", ["hflip", "none"]) == []
    assert nearest("lr", ["optim.lr"], cutoff=0.4) == ["optim.lr"]  # 0.4
    assert nearest("lr", ["optim.lr"]) == []  # below difflib's 0.6
    assert nearest("v5", ["v5", "v5", "v4"], n=3, cutoff=0.5) == ["v5", "v4"]  # v4: 0.5


def test_the_hint_quotes_each_name_as_messages_do():
    assert did_you_mean("lr", ["optim.lr", "lr"]) == "did you mean 'lr'?"
    assert did_you_mean("flip", ["hflip", "flips"], n=2) == "did you mean 'hflip' or 'flips'?"
    assert did_you_mean("it's", ["it's"]) == 'did you mean "it\'s"?'
    assert did_you_mean("zzz", ["hflip"]) == ""
    assert hint_for(["tu-resnet18", "it's"]) == 'did you mean \'tu-resnet18\' or "it\'s"?'  # names found elsewhere
    assert hint_for([]) == ""


def test_an_unknown_preset_suggests_the_nearest():
    """`train --preset v5-focl` listed the 14 presets without saying which was meant."""
    from liverctl.config import load_preset

    with pytest.raises(LiverctlError) as info:
        load_preset("v5-focl")
    assert str(info.value).startswith("unknown preset 'v5-focl'; did you mean 'v5-focal'? valid presets: demo, v1")
    with pytest.raises(LiverctlError, match=r"^unknown preset 'zzz'; valid presets: demo"):
        load_preset("zzz")


def test_only_suggest_measures_nearness():
    """Seven modules each measured nearness with difflib, with their own cutoffs, tie order and quoting; a new
    hint goes through liverctl/suggest.py."""
    users = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            if "difflib" in names:
                users.append(path.relative_to(ROOT).as_posix())
    assert users == ["suggest.py"]
