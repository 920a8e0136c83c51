"""No module of liverctl reaches into another's private names: what a module keeps to itself (`rle._clip`, an
attribute stamped onto another module's object) can change under its reader without a word. Privates of other
libraries used on purpose, for want of a public way, are listed with why."""

from __future__ import annotations

import ast
from pathlib import Path

import liverctl

ROOT = Path(liverctl.__file__).parent
# (file, expression): another library's private, set or read on purpose
THIRD_PARTY = {
    ("data/loaders.py", "loader._iterator"),  # torch's DataLoader has no public close (loaders.end_workers)
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _reaches(path: Path) -> list[str]:
    """The private names of other liverctl modules that `path` imports or reads, and the private attributes it
    sets on objects other than its own (self, cls)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update((a.asname or a.name.split(".")[0]) for a in node.names if a.name.startswith("liverctl"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("liverctl"):
            found.extend(f"from {node.module} import {a.name}" for a in node.names if _private(a.name))
            imported.update(a.asname or a.name for a in node.names)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        base = node.value.id if isinstance(node.value, ast.Name) else None
        if base in ("self", "cls"):
            continue
        if base in imported or isinstance(node.ctx, ast.Store):
            found.append(ast.unparse(node))
    return found


def test_no_module_reaches_into_another_modules_private_names():
    reaches = [(path.relative_to(ROOT).as_posix(), what) for path in sorted(ROOT.rglob("*.py"))
               for what in _reaches(path)]
    assert [r for r in reaches if r not in THIRD_PARTY] == []
