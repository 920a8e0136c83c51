"""NIfTI folders -> Zarr store: atomic per case, resumable, parallel.

How a run goes:
1. plan the sources (`liverctl.data.sources.plan`): find each source's cases in its layout, name the source,
   choose its role (main or extra), liver labels and id prefix; unpaired or duplicate files become
   failures, the rest go on. Planned once to refuse bad input before anything is written, and again under the
   store's lock, from the sources the store records once an ingest before this one has finished;
2. skip every case already complete in the store whose source files are unchanged (size and mtime, or
   failing that the sha256) and whose liver labels are the same, unless its files in the store are damaged
   (`liverctl.data.store_check.case_damage`: a chunk file missing, empty or of another size than written; with
   `verify`, `verify_case`: also one whose bytes differ from the checksum recorded, every chunk file read) or its
   mask was made before the label rule from a float-typed or scaled label file (`older_label_rule_note`): that
   case is built again;
3. ingest the others in worker processes (`liverctl.data.case_pool`): each writes its case as a standalone
   Zarr group in a work folder beside the store (`.<store name>.ingest/work/<id>`,
   `liverctl.data.case_writer`), with `complete=true` in the attributes written last; the main process
   then renames the folder into `cases/<id>` (a case appears whole or not at all);
4. assign patient-level folds (`liverctl.data.folds`) to the training cases of the sources in the folds,
   keeping the folds of the cases that already have one (same --folds and --fold-seed); the other
   training cases get `TRAIN_ONLY_FOLD`; rebuild the slice index (`liverctl.data.slice_index`), writing
   each only where it changed, so a second run changes nothing.

A killed run leaves at most a work folder, which the next run deletes before it starts, and, once it has
committed a case, a store without an index (moved out before the first commit): `LiverStore.open` says
to run ingest again rather than reading cases through an index that describes them as they were.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from liverctl.data.case_notes import case_notes
from liverctl.data.case_pool import run_jobs
from liverctl.data.case_writer import CaseJob, CaseResult, file_fingerprint
from liverctl.data.folds import case_source_attrs, set_sources_and_folds
from liverctl.data.liver_mask import LABEL_RULE, LABEL_RULE_ATTR, fractional_label_reason
from liverctl.data.nifti import BROKEN_LINK, open_nifti
from liverctl.data.schema import (
    CASES_GROUP,
    DEFAULT_FOLDS,
    EVERY_CHUNK,
    IMAGE,
    MAX_FOLDS,
    METADATA_FILE,
    MIN_FOLDS,
    STORE_FORMAT,
    TEST_FOLD,
    TRAIN,
    read_attrs,
    read_metadata,
    update_attrs,
    write_metadata,
)
from liverctl.data.slice_index import index_columns, index_matches, retire_index, write_index
from liverctl.data.sources import CaseFiles
from liverctl.data.sources.plan import IngestPlan, LabelSpec, LayoutSpec, SourcePlan, plan_sources
from liverctl.data.store import store_bytes
from liverctl.data.store_check import Damage, case_damage, unverifiable_note, verify_case
from liverctl.data.store_writer import (
    case_folders,
    check_free_space,
    commit_case,
    complete_cases,
    exclusive_work_dir,
    open_or_create_store,
)
from liverctl.errors import LiverctlError
from liverctl.files import file_sha256
from liverctl.plural import agree, plural
from liverctl.printable import quoted

ProgressCallback = Callable[[str, "str | None", int, int], None]
"""on_progress(event, case_id, done, total): "plan" (total = cases to ingest), then "case" (ingested) or
"failed" for each, with done = cases finished so far."""


@dataclass
class SourceCounts:
    """One source of the store after a run: what it is and how many of its cases are where."""

    layout: str
    role: str  # "main" or "extra"
    in_folds: bool
    train: int = 0  # complete training cases in the store
    test: int = 0
    ingested: int = 0  # by this run
    unchanged: int = 0
    folds: dict[int, int] = field(default_factory=dict)  # fold code -> training cases


@dataclass
class IngestSummary:
    """What an ingest run did and what the store holds afterwards."""

    store: Path
    cases: int = 0  # complete cases in the store
    train_cases: int = 0
    test_cases: int = 0
    ingested: list[str] = field(default_factory=list)  # written by this run
    unchanged: list[str] = field(default_factory=list)  # already complete and unchanged: skipped
    slices: int = 0  # slices in the store
    liver_slices: int = 0  # of which with at least one liver pixel
    bytes_read: int = 0  # source bytes read by this run
    bytes_stored: int = 0  # size of the store on disk
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # one line each: "<file>: <problem>"
    notes: list[str] = field(default_factory=list)  # one line each: done, but worth a word (label values)
    sources: dict[str, SourceCounts] = field(default_factory=dict)  # every source of the store, by name
    verified: int | None = None  # with `verify`: cases already in the store whose chunk files were all compared
    verified_bytes: int = 0  # with their checksums, and the bytes read for it
    unverifiable: list[str] = field(default_factory=list)  # with `verify`: cases stored without checksums

    @property
    def ok(self) -> bool:
        return not self.failures


def ingest_folder(
    data_dir: str | Path,
    store: str | Path = "store/liver.zarr",
    *,
    liver_labels: list[int] | tuple[int, ...] | None = None,
    n_folds: int | None = None,
    fold_seed: int | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    verify: bool = False,
) -> IngestSummary:
    """Ingest every case under `data_dir` into the store at `store`: `ingest_sources` with one source."""
    return ingest_sources(
        [Path(data_dir)],
        store,
        liver_labels=liver_labels,
        n_folds=n_folds,
        fold_seed=fold_seed,
        workers=workers,
        on_progress=on_progress,
        verify=verify,
    )


def ingest_sources(
    sources: list[str | Path],
    store: str | Path = "store/liver.zarr",
    *,
    liver_labels: LabelSpec = None,
    layouts: LayoutSpec = None,
    extra_in_folds: bool = False,
    n_folds: int | None = None,
    fold_seed: int | None = None,
    workers: int | None = None,
    on_progress: ProgressCallback | None = None,
    verify: bool = False,
) -> IngestSummary:
    """Ingest every case of `sources` (folders, or `NAME=PATH`) into the store at `store`.

    Steps: module docstring; names, roles, ids and liver labels: `liverctl.data.sources.plan`.
    `liver_labels`: values meaning liver, for every source or per source name ({"lits": [1, 2], None:
    [1]}). `layouts`: a layout forced on every source, or per source name. `extra_in_folds`: deal the
    extra sources' training cases into the folds too. `n_folds`, `fold_seed`: None keeps the store's (5 and 0
    for a new store); others than the store's deal every case anew, with a note. `workers`: processes (None: all cores; 1: in this
    process). `verify`: read every chunk file of the cases already in the store and compare it with the checksum
    ingest recorded (`store_check.verify_case`); a damaged case is built again like one with a chunk file missing
    (summary `verified`, `unverifiable`: cases stored before checksums, with a note). Raises `LiverctlError` for a missing, unrecognised or unusable source (before writing
    anything) or an unusable store path; per-case problems are listed in `IngestSummary.failures`, and
    every good case is still ingested.
    """
    started = time.perf_counter()
    check_fold_options(n_folds, fold_seed)
    if workers is not None and workers < 1:
        raise LiverctlError(f"--workers must be at least 1, not {workers}")
    store_path = Path(store)

    def planned(folders: dict[str, dict[str, Any]] | None = None) -> IngestPlan:
        plan = plan_sources(sources, store_path, liver_labels, layouts, extra_in_folds, folders)
        plan.check()
        return plan

    planned()  # bad input is refused before the lock, whose folder would be made beside the store
    with exclusive_work_dir(store_path) as work:
        # planned again (milliseconds) from the store as the ingest before this one left it: names, roles and ids
        # depend on the sources it records, which an ingest finishing since the check above may have changed.
        # Its case folders are read once under the lock, for the plan and the build alike
        folders = case_folders(store_path)
        plan = planned(folders)
        summary = IngestSummary(store=store_path)
        summary.failures.extend(plan.problems)
        summary.notes.extend(note for source in plan.sources for note in source.skipped)  # files left out
        open_or_create_store(store_path)  # inside the lock: a second ingest starting at once saw a half-made store
        run = _IngestRun(store_path, work, summary, on_progress or (lambda *args: None), verify)
        root_before = read_attrs(store_path)
        changed = update_attrs(store_path, {"sources": plan.records})  # before any case names a source
        run.build(plan, workers, folders)
        n_folds, fold_seed, dealt_anew = fold_settings(root_before, n_folds, fold_seed)
        if dealt_anew:
            summary.notes.append(dealt_anew)
        same_folds = root_before.get("n_folds") == n_folds and root_before.get("fold_seed") == fold_seed
        cases, arrays = run.finish(plan, changed=changed, n_folds=n_folds, fold_seed=fold_seed,
                                   same_folds=same_folds, root_before=root_before)
    _fill_summary(summary, cases, {r["name"]: r for r in plan.records}, arrays)
    if not same_folds or summary.ingested:  # a rerun that changed nothing says nothing
        summary.notes.extend(filter(None, [empty_folds_note(cases, n_folds), same_volume_note(store_path, cases)]))
    summary.seconds = time.perf_counter() - started
    return summary


def check_fold_options(n_folds: int | None, fold_seed: int | None) -> None:
    """One line for a --folds or --fold-seed no fold assignment can take."""
    if n_folds == 1:  # was accepted, and train then refused the store: no training case outside fold 0
        raise LiverctlError(f"--folds 1 puts every training case in fold 0, the one validated on, leaving none to "
                            f"train on: give {MIN_FOLDS} or more (--folds {DEFAULT_FOLDS} is the default)")
    if n_folds is not None and not MIN_FOLDS <= n_folds <= MAX_FOLDS:  # the index's fold column wrapped 168 to -88
        raise LiverctlError(f"--folds must be from {MIN_FOLDS} to {MAX_FOLDS}, not {n_folds}")
    if fold_seed is not None and fold_seed < 0:  # numpy's generators take no negative seed
        raise LiverctlError(f"--fold-seed must be 0 or more, not {fold_seed}")


def fold_settings(root_before: dict[str, Any], n_folds: int | None, fold_seed: int | None
                  ) -> tuple[int, int, str | None]:
    """(fold count, fold seed) of this run: those given, else the store's, else 5 and 0; and, when the store's
    folds change, the note that says so: every case is dealt anew (a rerun without --folds once did that
    silently)."""
    old_n, old_seed = root_before.get("n_folds"), root_before.get("fold_seed")
    stored = isinstance(old_n, int) and 1 <= old_n <= MAX_FOLDS and isinstance(old_seed, int) and old_seed >= 0
    n = n_folds if n_folds is not None else old_n if stored else DEFAULT_FOLDS
    seed = fold_seed if fold_seed is not None else old_seed if stored else 0
    if stored and (n, seed) != (old_n, old_seed):
        return n, seed, (f"folds dealt anew: the store had {old_n} folds (seed {old_seed}), now {n} (seed {seed}); "
                         "a run trained on the old folds cannot be resumed on this store")
    return n, seed, None


def empty_folds_note(cases: dict[str, dict[str, Any]], n_folds: int) -> str | None:
    """The note for folds left without a training case (more folds than training cases in them), which no run
    can validate on; None when every fold holds one, or none does (a store of test cases only)."""
    dealt = [a.get("fold") for a in cases.values() if a["split"] == TRAIN]
    in_folds = sum(1 for fold in dealt if isinstance(fold, int) and fold >= 0)
    empty = [fold for fold in range(n_folds) if fold not in dealt]
    if not in_folds or not empty:
        return None
    return _empty_folds_text(f"{len(empty)} of the {n_folds} folds ({', '.join(map(str, empty))}) "
                             f"{agree(len(empty), 'holds', 'hold')}", len(empty), in_folds)


def same_volume_note(store: str | Path, cases: dict[str, dict[str, Any]]) -> str | None:
    """The note for volumes stored under more than one case id (the sha256 of their files equal: one file
    reached by two names, a hard link or a symbolic one, or a copy); None when there are none. What it costs
    depends on the cases' splits: two training cases dealt into different folds, a run that validates on one
    has trained on the other; a test case that is also a training case is scored too high against its labels;
    two test cases, the submission predicts one volume twice."""
    by_content: dict[str, list[str]] = {}
    for case_id, attrs in cases.items():
        if isinstance(attrs.get("sha256"), str):
            by_content.setdefault(attrs["sha256"], []).append(case_id)
    same = [ids for ids in by_content.values() if len(ids) > 1]
    if not same:
        return None
    named = "; ".join(" and ".join(map(quoted, ids)) for ids in same[:3]) + (f"; {len(same) - 3} more" if len(same) > 3
                                                                             else "")
    costs = []
    for ids in same:
        trained = sum(cases[i].get("split") == TRAIN for i in ids)
        for cost, holds in (
            ("a run that validates on one of them has trained on the other, and its Dice reads too high", trained > 1),
            ("a test case is trained on, and its score against its labels reads too high", 0 < trained < len(ids)),
            ("the submission predicts one volume under two ids", len(ids) - trained > 1),
        ):
            if holds and cost not in costs:
                costs.append(cost)
    return (f"{store}: {plural(len(same), 'volume')} {agree(len(same), 'is', 'are')} stored under more than one case "
            f"id ({named}): one file under two names (a link) or a copy; {'; '.join(costs)}: ingest into a new "
            "--store from a folder that holds each volume once")


def planned_empty_folds_note(plan: IngestPlan, store: str | Path, n_folds: int | None) -> str | None:
    """`empty_folds_note` before the ingest (`ingest --dry-run`): where the training cases in the folds after it
    (the plan's, and the store's other ones) are fewer than the folds, that many folds at least are left empty
    whatever the deal; which ones the deal decides, so they are not named."""
    store = Path(store)
    n, _, _ = fold_settings(read_attrs(store), n_folds, None)
    planned = {c.case_id for s in plan.sources for c in s.cases}
    in_folds = {c.case_id for s in plan.sources if s.in_folds and s.error is None for c in s.cases if c.split == TRAIN}
    for case, attrs in case_folders(store).items() if store.is_dir() else ():  # kept as they are
        fold = attrs.get("fold")
        if case not in planned and attrs.get("complete") is True and attrs.get("split") == TRAIN and (
                isinstance(fold, int) and fold >= 0):
            in_folds.add(case)
    if not 0 < len(in_folds) < n:
        return None
    empty = n - len(in_folds)
    return _empty_folds_text(f"at least {empty} of the {n} folds would hold", empty, len(in_folds))


def _empty_folds_text(folds_hold: str, empty: int, in_folds: int) -> str:
    """The empty-folds note after what holds no case ('2 of the 9 folds (3, 7) hold')."""
    them = agree(empty, "it", "them")
    return (f"{folds_hold} no training case, with {plural(in_folds, 'training case')} in the folds: no run can "
            f"validate on {them} (`train --folds all` skips {them}); --folds {in_folds} or fewer leaves none empty")


def planned_folds(store: str | Path, n_folds: int | None, fold_seed: int | None) -> str:
    """What an ingest into `store` would do with the folds, in one line (`ingest --dry-run`): their count and seed,
    and whether the store's are kept or dealt anew."""
    check_fold_options(n_folds, fold_seed)
    root = read_attrs(Path(store))
    n, seed, dealt_anew = fold_settings(root, n_folds, fold_seed)
    if dealt_anew:
        return dealt_anew
    if (root.get("n_folds"), root.get("fold_seed")) == (n, seed):
        return f"folds: {n} (seed {seed}), the store's, kept"
    return f"folds: {n} (seed {seed}), dealt {'for a new store' if not root else 'anew (the store records none)'}"


@dataclass
class _IngestRun:
    """One ingest run's main-process side, inside the store's lock: which cases to build, building them,
    committing each, and the folds, index and root attributes at the end."""

    store: Path
    work: Path
    summary: IngestSummary
    progress: ProgressCallback
    verify: bool = False  # every chunk file of the cases already in the store read against its checksum
    existing: dict[str, dict[str, Any]] = field(default_factory=dict)  # complete cases before the run
    built: dict[str, dict[str, Any]] = field(default_factory=dict)  # cases this run moved in, as moved in
    damaged: dict[str, Damage] = field(default_factory=dict)  # of those, the ones whose files are damaged
    unverified: set[str] = field(default_factory=set)  # of those, the ones whose image lacks EVERY_CHUNK
    owner: dict[str, SourcePlan] = field(default_factory=dict)  # case id -> its source

    def build(self, plan: IngestPlan, workers: int | None, folders: dict[str, dict[str, Any]]) -> None:
        """Build every changed case of the plan and move each into the store as it finishes. `folders`: the
        store's `case_folders`, read under this run's lock."""
        self.existing = complete_cases(self.store, folders)
        self._check_existing(plan)
        jobs = self._jobs(plan)
        check_free_space(self.store, [job.case for job in jobs])
        self.progress("plan", None, 0, len(jobs))
        results = run_jobs(jobs, workers)
        for finished, result in enumerate(results, start=1):
            self.summary.notes.extend(result.notes)
            if result.no_space:  # every later case would fail the same way: stop, keep what is complete
                results.close()  # stops the workers
                shutil.rmtree(self.work, ignore_errors=True)
                kept = len(self.summary.ingested)
                raise LiverctlError(
                    f"{result.message}; the {plural(kept, 'case')} finished before {agree(kept, 'is', 'are')} kept; "
                    "free some space and run ingest again"
                )
            self._take(result, finished, len(jobs))

    def _check_existing(self, plan: IngestPlan) -> None:
        """Find the complete cases whose files are damaged: those of the plan are built again (`_jobs`), the
        others are failures. With `verify`, every chunk file is read against its checksum (`verify_case`)."""
        planned = {case.case_id for source in plan.sources for case in source.cases}
        if self.verify:
            self.summary.verified = 0
        for case_id, attrs in self.existing.items():
            case_dir = self.store / CASES_GROUP / case_id
            arrays: dict[str, dict[str, Any] | None] = {}  # each array's zarr.json, read once
            if self.verify:
                verification = verify_case(case_dir, attrs, arrays=arrays)
                damage = verification.damage
                self.summary.verified += 1
                self.summary.verified_bytes += verification.bytes_read
                if damage is None and not verification.checked:
                    self.summary.unverifiable.append(case_id)
            else:
                damage = case_damage(case_dir, attrs, arrays=arrays)
            image_attrs = (arrays.get(IMAGE) or {}).get("attributes")
            if not isinstance(image_attrs, dict) or image_attrs.get(EVERY_CHUNK) is not True:
                self.unverified.add(case_id)
            if damage is not None:
                self.damaged[case_id] = damage
                if case_id not in planned:
                    self.summary.failures.append(
                        f"{damage.path}: case {quoted(case_id)} is damaged ({damage.problem.split(';')[0]}) and none of "
                        "the sources holds it; ingest again with its source, or delete "
                        f"{case_dir} and ingest again"
                    )

    def _jobs(self, plan: IngestPlan) -> list[CaseJob]:
        """The cases to build, biggest first (the slowest start early and the pool finishes together)."""
        jobs, sizes = [], {}
        for source in plan.sources:
            for case in source.cases:
                self.owner[case.case_id] = source
                try:
                    sizes[case.case_id] = os.path.getsize(case.volume)
                    attrs = self.existing.get(case.case_id)
                    if is_unchanged(case, attrs, source.liver_labels):
                        damage = self.damaged.get(case.case_id)
                        older_rule = None if damage is not None else older_label_rule_note(case, attrs)
                        if damage is None and older_rule is None:
                            self.summary.unchanged.append(case.case_id)  # its notes again: it is still so
                            self.summary.notes.extend(case_notes(attrs, case.volume, case.label))
                            continue
                        self.summary.notes.append(older_rule or (
                            f"{damage.path}: case {quoted(case.case_id)} was damaged ({damage.problem.split(';')[0]}); "
                            "ingested again from its source"
                        ))
                except OSError as exc:  # a dangling link, no permission, a file gone since the listing
                    where = Path(exc.filename or case.volume)
                    broken = where.is_symlink() and not where.exists()
                    self.summary.failures.append(
                        str(LiverctlError(BROKEN_LINK if broken else f"cannot be read ({exc.strerror or exc})",
                                          path=where))
                    )
                    continue
                jobs.append(CaseJob(case, str(self.work), source.liver_labels))
        jobs.sort(key=lambda j: -sizes[j.case.case_id])
        return jobs

    def _take(self, result: CaseResult, finished: int, total: int) -> None:
        if not result.ok:
            self.summary.failures.append(result.message)
            self.progress("failed", result.case_id, finished, total)
            return
        built = self.work / result.case_id
        meta = read_metadata(built)  # the worker's group, its `complete` written last: read once, here
        if meta is None or not isinstance(meta.get("attributes"), dict):
            raise LiverctlError(f"missing or unreadable {METADATA_FILE}", path=built)
        meta["attributes"].update(case_source_attrs(self.owner[result.case_id], self.existing.get(result.case_id)))
        write_metadata(built, meta)  # in the work folder: the case enters the store whole (commit_case)
        if not self.summary.ingested:  # the first case this run changes: the index no longer holds
            retire_index(self.store, self.work)
        commit_case(built, self.store, result.case_id, self.work)
        self.built[result.case_id] = meta["attributes"]
        self.summary.ingested.append(result.case_id)
        self.summary.bytes_read += result.bytes_read
        self.progress("case", result.case_id, finished, total)

    def finish(
        self, plan: IngestPlan, *, changed: bool, n_folds: int, fold_seed: int, same_folds: bool,
        root_before: dict[str, Any],
    ) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
        """Folds, slice index and root attributes, each written only where it changed. Returns the complete
        cases' attributes and the index columns."""
        # the store's complete cases: those found by `build` (each group's zarr.json read once per run), with the
        # ones this run moved in as moved in, in id order as complete_cases gives them
        cases = dict(sorted({**self.existing, **self.built}.items()))
        records = {r["name"]: r for r in plan.records}
        changed |= bool(self.summary.ingested)
        changed |= set_sources_and_folds(
            self.store, cases, records, main=plan.main, n_folds=n_folds, fold_seed=fold_seed,
            same_folds=same_folds,
        )
        # the cases built by this run have every chunk file; the others' image metadata was read by _check_existing
        unverified = len((self.unverified & set(cases)) - set(self.summary.ingested))
        if unverified:
            self.summary.notes.append(
                f"{self.store}: {plural(unverified, 'case')} {agree(unverified, 'was', 'were')} ingested before ingest "
                "wrote every chunk file: a missing image chunk file there reads as 0 HU unnoticed; ingest into a new "
                "--store to have them checked"
            )
        # cases this run built again have their checksums now
        self.summary.unverifiable = sorted(set(self.summary.unverifiable) & set(cases) - set(self.summary.ingested))
        if self.summary.unverifiable:
            self.summary.notes.append(unverifiable_note(self.store, self.summary.unverifiable))
        arrays, index_attrs = index_columns(cases)
        if not index_matches(self.store, arrays, index_attrs):
            write_index(self.store, self.work, arrays, index_attrs)
            changed = True
        root_attrs = {
            "format": STORE_FORMAT,
            "liver_labels": records.get(plan.main or "", {}).get("liver_labels", root_before.get("liver_labels")),
            "n_folds": n_folds,
            "fold_seed": fold_seed,
        }
        stale = any(root_before.get(k) != v for k, v in root_attrs.items()) or "updated" not in root_before
        if changed or stale:
            root_attrs["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            update_attrs(self.store, root_attrs)
        return cases, arrays


def is_unchanged(case: CaseFiles, attrs: dict[str, Any] | None, liver_labels: tuple[int, ...] | None) -> bool:
    """Whether the store's case (`attrs`) was built from these very files with these liver labels."""
    if attrs is None or attrs.get("split") != case.split:
        return False
    if case.split == TRAIN:
        stored = attrs.get("liver_labels")
        if (None if stored is None else tuple(stored)) != liver_labels:
            return False
    sources = [(case.volume, "")] + ([(case.label, "label_")] if case.label is not None else [])
    for path, prefix in sources:
        fp = file_fingerprint(path)
        if fp["size"] != attrs.get(f"{prefix}size"):
            return False
        if fp["mtime"] != attrs.get(f"{prefix}mtime") and file_sha256(path) != attrs.get(f"{prefix}sha256"):
            return False
    return True


def older_label_rule_note(case: CaseFiles, attrs: dict[str, Any]) -> str | None:
    """A note when the store's case (`attrs`, its files unchanged) was built before the label rule
    (`liverctl.data.liver_mask`: no `LABEL_RULE_ATTR`) from a label file whose header says its values may be
    fractional: ingest then compared them exactly, so the stored mask may differ from the rule's and the case is
    built again. None for a case stored by the rule or an unscaled integer label (most files; no voxel is
    read, only the header)."""
    if case.label is None or attrs.get(LABEL_RULE_ATTR) == LABEL_RULE:
        return None
    try:
        reason = fractional_label_reason(open_nifti(case.label))
    except LiverctlError:  # built again: the read says what is wrong with it
        reason = "header cannot be read"
    if reason is None:
        return None
    return (
        f"{case.label}: label {reason}; case {quoted(case.case_id)} was stored by an ingest older than the label rule, "
        "which compared float label values exactly (0.99999 was not 1): ingested again"
    )


def _fill_summary(
    summary: IngestSummary,
    cases: dict[str, dict[str, Any]],
    records: dict[str, dict[str, Any]],
    arrays: dict[str, np.ndarray],
) -> None:
    summary.cases = len(cases)
    summary.train_cases = sum(1 for a in cases.values() if a["split"] == TRAIN)
    summary.test_cases = summary.cases - summary.train_cases
    summary.sources = _source_counts(cases, records, summary)
    summary.slices = int(arrays["z"].shape[0])
    summary.liver_slices = int(np.count_nonzero(arrays["liver_pixels"]))
    summary.bytes_stored = store_bytes(summary.store)


def _source_counts(
    cases: dict[str, dict[str, Any]], records: dict[str, dict[str, Any]], summary: IngestSummary
) -> dict[str, SourceCounts]:
    counts = {
        name: SourceCounts(r.get("layout", "?"), r.get("role", "?"), bool(r.get("in_folds")))
        for name, r in records.items()
    }
    ingested, unchanged = set(summary.ingested), set(summary.unchanged)
    for case_id, attrs in cases.items():
        name = attrs.get("source_name") or "main"
        c = counts.setdefault(name, SourceCounts("?", "?", False))
        if attrs["split"] == TRAIN:
            c.train += 1
            fold = TEST_FOLD if attrs.get("fold") is None else int(attrs["fold"])
            c.folds[fold] = c.folds.get(fold, 0) + 1
        else:
            c.test += 1
        c.ingested += case_id in ingested
        c.unchanged += case_id in unchanged
    return counts
