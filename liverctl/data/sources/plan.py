"""Which cases of which sources go into a store, under which ids, with which liver labels and role.

The first source of a store is its *main* source: its training cases are dealt into the folds and its
test cases are the test set. Every later source (and every source after the first on one command
line) is *extra*: its training cases are trained on but never validated on (fold code
`TRAIN_ONLY_FOLD`) unless `extra_in_folds`, and its test volumes are left out. A store remembers its
sources in its `sources` attribute (name, layout, path, role, in_folds, prefix, liver_labels), so a
later ingest keeps each source's name, role and id prefix.

Names: `NAME=PATH` names a source; otherwise a source already in the store keeps its name (matched by
path) and a new one is named after its layout (`lits`, then `lits2`, ...). Ids: the main source's ids
are its own (they are the submission's ids); an extra source whose ids clash with another source's is
prefixed with its name (`lits-3`), once and for good.

Liver labels, per source: `--liver-labels NAME=1,2` for that source, else its dataset.json (or its
layout's own names: TotalSegmentator's liver.nii.gz), else an
unnamed `--liver-labels 1,2`, else (competition layout only) any value > 0. A source of another
layout with none of these is an error, not a guess.

Planning reads the store's JSON only and writes nothing (`liverctl ingest --dry-run`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liverctl.data.liver_mask import check_liver_labels
from liverctl.data.schema import METADATA_FILE, TEST, read_attrs
from liverctl.data.sources import LAYOUTS, CaseFiles, DataLayout, find_source
from liverctl.data.sources.labels import liver_values
from liverctl.data.store_writer import case_folders
from liverctl.errors import LiverctlError
from liverctl.plural import plural
from liverctl.printable import one_line, quoted

MAIN, EXTRA = "main", "extra"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")

LabelSpec = Sequence[int] | Mapping[str | None, Sequence[int]] | None
LayoutSpec = str | Mapping[str | None, str] | None


@dataclass
class SourcePlan:
    """One source as planned: its cases under their store ids and what the store records about it."""

    name: str
    path: Path
    layout: str
    role: str  # MAIN or EXTRA
    in_folds: bool
    prefix: str  # "" or "<name>-"
    liver_labels: tuple[int, ...] | None  # None: any value > 0
    labels_from: str  # where the liver labels came from, for the dry run
    cases: list[CaseFiles] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # per case: "<file>: <problem>"
    skipped: list[str] = field(default_factory=list)  # files left out on purpose
    error: str | None = None  # a problem with the whole source: nothing is ingested
    stored: bool = False  # recorded in the store before this run
    in_store: int = 0  # of `cases`, how many ids the store already holds from this source

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "layout": self.layout,
            "path": str(self.path),
            "role": self.role,
            "in_folds": self.in_folds,
            "prefix": self.prefix,
            "liver_labels": None if self.liver_labels is None else list(self.liver_labels),
        }


@dataclass
class IngestPlan:
    sources: list[SourcePlan]
    records: list[dict[str, Any]]  # the store's `sources` attribute after this run
    main: str | None  # name of the main source

    @property
    def problems(self) -> list[str]:
        return [p for s in self.sources for p in s.problems]

    def check(self) -> None:
        """Raise one `LiverctlError` naming every source that cannot be ingested as it is."""
        errors = [f"{s.name} ({s.path}): {s.error}" for s in self.sources if s.error]
        if errors:
            raise LiverctlError("; ".join(errors))


def parse_source(text: str | Path) -> tuple[str | None, Path]:
    """`PATH` or `NAME=PATH` (an existing path with `=` in it stays a path)."""
    if isinstance(text, Path) or "=" not in text or Path(text).exists():
        return None, Path(text)
    name, _, path = text.partition("=")
    if not _NAME.match(name):
        raise LiverctlError(
            f"source name {name!r} in {text!r}: use lower-case letters, digits and '_' (e.g. lits=/data/LiTS)"
        )
    return name, Path(path)


def _per_source(spec: Any, name: str | None) -> tuple[Any, bool]:
    """(value for the source called `name`, whether it was named for it) from a spec that is a plain
    value (for every source) or a mapping {name: value, None: value for the others}."""
    if not isinstance(spec, Mapping):
        return spec, False
    if name is not None and name in spec:
        return spec[name], True
    return spec.get(None), False


def _read_store(store: Path, folders: dict[str, dict[str, Any]] | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """(source records, case id -> source name (None: from before sources existed)) of a store. `folders`: its
    `case_folders`, where already read."""
    root = read_attrs(store)
    folders = case_folders(store) if folders is None else folders
    cases = {name: attrs.get("source_name") for name, attrs in folders.items() if attrs.get("complete") is True}
    sources = root.get("sources") or []
    if not isinstance(sources, list):
        raise _damaged_record(store, f"its 'sources' is a {type(sources).__name__}, not a list")
    records = [r for r in sources if isinstance(r, dict) and isinstance(r.get("name"), str)]
    for record in records:  # what a later ingest takes from them: each source's path, role and id prefix
        bad = next((key for key in ("path", "prefix") if key in record and not isinstance(record[key], str)), None)
        if bad is not None:
            raise _damaged_record(store, f"its record of source {quoted(record['name'], 40)} holds a {bad} of "
                                         f"{type(record[bad]).__name__}, not text")
        if record.get("role", EXTRA) not in (MAIN, EXTRA):
            raise _damaged_record(store, f"its record of source {quoted(record['name'], 40)} holds a role of "
                                         f"{quoted(record['role'], 40)}, not {MAIN!r} or {EXTRA!r}")
    return records, cases


def _damaged_record(store: Path, problem: str) -> LiverctlError:
    return LiverctlError(f"the store's record of its sources is damaged ({problem}); mend it, or ingest into a "
                         "new store", path=Path(store) / METADATA_FILE)


def _unique_name(base: str, used: set[str]) -> str:
    name, n = base, 2
    while name in used:
        name, n = f"{base}{n}", n + 1
    return name


STORED_LABELS = "the store: as ingested before"


def _liver_labels(
    spec: LabelSpec, name: str, found: DataLayout, stored: dict[str, Any] | None = None
) -> tuple[tuple[int, ...] | None, str, bool, str | None]:
    """(liver labels, where from, whether the source's label names are checked, error) for one source.

    A source the store holds keeps the labels it was ingested with unless `--liver-labels` names others:
    a rerun without them took every value > 0 as liver again (or failed, for LiTS) and re-ingested every case."""
    value, named = _per_source(spec, name)
    if named:
        values = _values(value, f"{name}=")  # the dry run says "(from --liver-labels lits=1,2)", not "(... lits=)"
        return values, f"--liver-labels {name}={','.join(map(str, values))}", False, None
    kept = _stored_labels(stored)
    label_names, named_by = found.label_names, found.labels_named_by
    if label_names is not None:
        liver = liver_values(label_names)
        try:  # 0 named liver: every background voxel would be liver
            check_liver_labels(liver, f"{named_by} names {','.join(map(str, liver))} as liver")
        except LiverctlError as exc:
            return None, named_by, True, str(exc)
        if kept is not None and kept[0] is not None and kept[0] != liver:  # NAME=... given once over dataset.json
            return kept[0], STORED_LABELS, False, None
        if not liver:
            # the names are anyone's text: one printable line, cut (a name of 200,000 characters was all of it)
            shown = one_line(", ".join(f"{v}={n}" for v, n in sorted(label_names.items())))
            return None, named_by, True, (
                f"{named_by} names no liver label ({shown}); give --liver-labels {name}=VALUES"
            )
        return liver, named_by, True, None
    if value is not None:
        return _values(value), "--liver-labels", False, None
    if kept is not None:
        return kept[0], STORED_LABELS, False, None
    if found.layout == "competition":
        return None, "the competition layout's default", False, None
    hint = getattr(LAYOUTS[found.layout], "LIVER_LABELS_HINT", "")  # each layout's own, where it has one
    return None, "", False, (
        f"nothing names its label values (no dataset.json); give --liver-labels {name}=VALUES" + (hint and f" ({hint})")
    )


def _stored_labels(record: dict[str, Any] | None) -> tuple[tuple[int, ...] | None] | None:
    """(liver labels,) a store's source record holds (None in it: any value > 0), or None where it holds none
    that could be used (the store is untrusted input)."""
    if record is None or "liver_labels" not in record:
        return None
    labels = record["liver_labels"]
    if labels is None:
        return (None,)
    if isinstance(labels, list) and labels:
        try:  # one an older liverctl let in (--liver-labels 0 or -1) is not kept: it is asked for again
            return (tuple(sorted(set(check_liver_labels(labels, "the store's")))),)
        except LiverctlError:
            return None
    return None


def _values(values: Sequence[int], name: str = "") -> tuple[int, ...]:
    """Liver labels given through the API (`ingest_sources(liver_labels=...)`), checked as --liver-labels is."""
    values = list(values)
    if not values:
        raise LiverctlError("--liver-labels needs at least one label value, e.g. 1 or 1,2")
    return tuple(sorted(set(check_liver_labels(values, f"--liver-labels {name}{','.join(map(str, values))}"))))


def plan_sources(
    sources: Sequence[str | Path | tuple[str | None, str | Path]],
    store: str | Path,
    liver_labels: LabelSpec = None,
    layouts: LayoutSpec = None,
    extra_in_folds: bool = False,
    folders: dict[str, dict[str, Any]] | None = None,
) -> IngestPlan:
    """Plan the ingest of `sources` into `store` (module docstring); writes nothing. `folders`: the store's case
    folders (`store_writer.case_folders`), where the caller has read them.

    Raises `LiverctlError` for a missing source folder, one whose layout is not recognised, a source
    given twice or a name used twice; problems of whole sources are in `SourcePlan.error` (see
    `IngestPlan.check`), those of single cases in `SourcePlan.problems`.
    """
    if not sources:
        raise LiverctlError("give at least one data folder to ingest")
    specs = [s if isinstance(s, tuple) else parse_source(s) for s in sources]
    for key in (layouts or {}) if isinstance(layouts, Mapping) else ():
        if key is not None and key not in {n for n, _ in specs}:
            raise LiverctlError(f"--layout {key}=...: no source is named {key!r} (name one with {key}=PATH)")
    planner = _Planner(*_read_store(Path(store), folders))
    seen_paths: dict[str, str] = {}
    for explicit, path in specs:
        resolved = str(Path(path).resolve())
        if resolved in seen_paths:
            raise LiverctlError(f"is given twice (as {seen_paths[resolved]!r} too)", path=path)
        seen_paths[resolved] = str(path)
        planner.add(explicit, Path(path), find_source(path, _per_source(layouts, explicit)[0]),
                    liver_labels=liver_labels, extra_in_folds=extra_in_folds)
    planner.set_prefixes()
    planner.claim_ids()
    merged = {r["name"]: dict(r) for r in planner.records}
    for plan in planner.plans:
        merged[plan.name] = plan.record()
    return IngestPlan(sources=planner.plans, records=list(merged.values()), main=planner.main)


class _Planner:
    """The sources of one plan, added one by one, then their id prefixes and ids settled against each other
    and against the cases the store already holds."""

    def __init__(self, records: list[dict[str, Any]], stored_cases: dict[str, str | None]):
        self.records = records
        self.by_name = {r["name"]: r for r in records}
        self.by_path = {str(Path(r["path"]).resolve()): r["name"] for r in records if isinstance(r.get("path"), str)}
        self.main = next((r["name"] for r in records if r.get("role") == MAIN), None)
        self.used = set(self.by_name)
        self.stored_cases = stored_cases
        self.plans: list[SourcePlan] = []

    def _role(self, name: str) -> str:
        stored = self.by_name.get(name)
        if stored is not None:
            return stored.get("role", EXTRA)
        if self.main is None:
            self.main = name
            return MAIN
        return EXTRA

    def add(self, explicit: str | None, path: Path, found, *, liver_labels: LabelSpec, extra_in_folds: bool) -> None:
        """Plan one source (`found`: what `find_source` found at `path`)."""
        name = explicit or self.by_path.get(str(path.resolve())) or _unique_name(found.layout, self.used)
        if name in {p.name for p in self.plans}:
            raise LiverctlError(f"two sources are named {name!r}; name them apart with NAME=PATH")
        self.used.add(name)
        stored = self.by_name.get(name)
        role = self._role(name)
        labels, labels_from, checked, error = _liver_labels(liver_labels, name, found, stored)
        plan = SourcePlan(
            name=name,
            path=path.absolute(),
            layout=found.layout,
            role=role,
            in_folds=role == MAIN or extra_in_folds,
            prefix=(stored or {}).get("prefix", "") if stored is not None else "",
            liver_labels=labels,
            labels_from=labels_from,
            problems=[str(p) for p in found.problems],
            skipped=list(found.skipped),
            error=error,
            stored=stored is not None,
        )
        for case in found.cases:
            if case.split == TEST and role == EXTRA:
                continue
            plan.cases.append(case if checked else dataclasses.replace(case, known_labels=None))
        left_out = len(found.by_split(TEST)) if role == EXTRA else 0
        if left_out:
            plan.skipped.append(f"{plural(left_out, 'test volume')} left out: an extra source gives training cases only")
        self.plans.append(plan)

    @property
    def owner(self) -> dict[str, str | None]:
        """Case id in the store -> its source (cases from before sources belong to the main source)."""
        return {cid: (src or self.main) for cid, src in self.stored_cases.items()}

    def set_prefixes(self) -> None:
        """A new extra source whose ids clash with another source's is prefixed with its name."""
        owner = self.owner
        for plan in self.plans:
            if plan.stored or plan.role == MAIN:
                continue
            taken = {cid for cid, src in owner.items() if src != plan.name}
            for other in self.plans:
                if other is not plan:
                    taken |= {other.prefix + c.case_id for c in other.cases}
            if taken & {c.case_id for c in plan.cases}:
                plan.prefix = f"{plan.name}-"

    def claim_ids(self) -> None:
        """Give each case its store id; an id another source holds is a problem of that case."""
        owner = self.owner
        claimed: dict[str, str] = {cid: src for cid, src in owner.items() if src is not None}
        # A case's folder is named by its id: ids that differ only in letter case ('A', 'a') would be one
        # folder on a case-insensitive file system (macOS, Windows), one case's chunks over the other's.
        folded: dict[str, str] = {cid.casefold(): cid for cid in owner}
        for plan in self.plans:
            kept = []
            for case in plan.cases:
                case_id = plan.prefix + case.case_id
                holder = claimed.get(case_id)
                if holder is not None and holder != plan.name:
                    plan.problems.append(str(LiverctlError(
                        f"case id {quoted(case_id)} is already taken by source {quoted(holder)}", path=case.volume
                    )))
                    continue
                twin = folded.setdefault(case_id.casefold(), case_id)
                if twin != case_id and case_id not in owner:
                    plan.problems.append(str(LiverctlError(
                        f"case id {quoted(case_id)} differs from case {quoted(twin)} only in letter case: on a case-insensitive "
                        "file system (macOS, Windows) their store folders would be one; rename one", path=case.volume
                    )))
                    continue
                claimed[case_id] = plan.name
                kept.append(dataclasses.replace(case, case_id=case_id))
            plan.cases = kept
            plan.in_store = sum(1 for c in kept if owner.get(c.case_id) == plan.name)


def parse_liver_labels_option(entries: Sequence[str] | None) -> dict[str | None, list[int]] | None:
    """`--liver-labels` values: `1,2` (every source without dataset.json) or `NAME=1,2` (one source)."""
    out: dict[str | None, list[int]] = {}
    for entry in entries or []:
        name, _, values = entry.rpartition("=")
        if name and not _NAME.match(name):
            raise LiverctlError(f"--liver-labels {entry!r}: {name!r} is not a source name (e.g. lits=1,2)")
        try:
            parsed = [int(part) for part in values.split(",") if part.strip()]
        except ValueError:
            raise LiverctlError(
                f"--liver-labels {entry!r}: expected label values like 1 or 1,2, or NAME=1,2 for one source"
            ) from None
        if not parsed:
            raise LiverctlError("--liver-labels needs at least one label value, e.g. 1 or 1,2")
        check_liver_labels(parsed, f"--liver-labels {entry}")
        key = name or None
        if key in out:
            raise LiverctlError(f"--liver-labels is given twice for {'source ' + key if key else 'every source'}")
        out[key] = parsed
    return out or None


def parse_layout_option(entries: Sequence[str] | None) -> dict[str | None, str] | None:
    """`--layout` values: `lits` (every source) or `NAME=lits` (the source given as NAME=PATH)."""
    from liverctl.data.sources import LAYOUTS

    out: dict[str | None, str] = {}
    for entry in entries or []:
        name, _, layout = entry.rpartition("=")
        if layout not in LAYOUTS:
            raise LiverctlError(f"--layout {entry!r}: unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
        out[name or None] = layout
    return out or None
