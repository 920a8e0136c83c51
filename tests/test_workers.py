"""How liverctl starts worker processes (liverctl/workers.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liverctl.workers import start_method

# In a fresh interpreter: start one worker through liverctl's context, then SIGTERM the forkserver (as a
# signal to the process group does) and report whether it is still there; and whether a pool worker that
# put the default back dies of SIGTERM.
_PROBE = """
import multiprocessing.forkserver as fs, os, signal, sys, time
from liverctl.workers import default_sigterm, mp_context

def sigterm_handler():
    return signal.getsignal(signal.SIGTERM) == signal.SIG_IGN

def after_default():
    default_sigterm()
    return signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

if __name__ == "__main__":
    ctx = mp_context()
    with ctx.Pool(1) as pool:
        inherited = pool.apply(sigterm_handler)
        restored = pool.apply(after_default)
    pid = fs._forkserver._forkserver_pid
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    alive = os.waitpid(pid, os.WNOHANG) == (0, 0)
    print(inherited, restored, alive)
"""


@pytest.mark.skipif(start_method() != "forkserver", reason="no forkserver on this platform")
def test_the_forkserver_outlives_a_sigterm_and_pool_workers_can_put_the_default_back(tmp_path):
    """A SIGTERM to the whole group (`timeout`, `kill -- -PGID`) used to kill the forkserver, and with it
    (torch's workers take a new parent for a dead trainer) every DataLoader worker: the trainer's next
    batch failed instead of the run being saved and ended as interrupted."""
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    done = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "True"], done.stdout + done.stderr[-2000:]


# In a fresh interpreter: a pool of two workers started as ingest's and synth's are, each busy with a long
# job; print their pids, then die of SIGKILL (the OOM killer, or `kill -9` of the main process alone).
_ORPHAN_PROBE = """
import os, signal, sys, time
from concurrent.futures import ProcessPoolExecutor
from importlib import import_module
from liverctl.workers import mp_context

def busy(_):
    time.sleep(300)

if __name__ == "__main__":
    module, name = sys.argv[1].split(":")
    initializer = getattr(import_module(module), name)
    pool = ProcessPoolExecutor(2, mp_context=mp_context(), initializer=initializer)
    [pool.submit(busy, i) for i in range(2)]
    while len(pool._processes) < 2:
        time.sleep(0.05)
    time.sleep(1.0)  # the initializer has run
    print(*pool._processes, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for the forkserver to reap it does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # gone meanwhile, or no /proc (macOS: os.kill's answer stands)
        return not Path("/proc").is_dir()


@pytest.mark.skipif(start_method() != "forkserver", reason="no forkserver on this platform")
@pytest.mark.parametrize("initializer", ["liverctl.data.case_writer:worker_init", "liverctl.workers:default_sigterm"])
def test_pool_workers_exit_when_the_main_process_is_killed(tmp_path, initializer):
    """A forkserver worker's parent is the forkserver, which lives as long as one of its workers does: ingest's
    workers watched os.getppid() and synth's nothing, so after the main process was killed alone they waited on
    their task queue for good (seen: two ingest workers and their forkserver still there 30 minutes later)."""
    probe = tmp_path / "probe.py"
    probe.write_text(_ORPHAN_PROBE)
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"  # files: workers outliving the probe hold a pipe open
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run([sys.executable, str(probe), initializer], stdout=stdout, stderr=stderr, timeout=120)
    assert done.returncode == -signal.SIGKILL, err.read_text()[-2000:]
    workers = [int(pid) for pid in out.read_text().split()]
    assert len(workers) == 2
    try:
        deadline = time.monotonic() + 30  # a bound for a busy machine, not a timing figure: they go at once
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "pool workers outlived the main process"
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


_PRELOAD_PROBE = """
import sys
from concurrent.futures import ProcessPoolExecutor
from liverctl.workers import mp_context, start_forkserver
import probe_module

if sys.argv[1] == "start":
    start_forkserver(("probe_preloaded",))
with ProcessPoolExecutor(1, mp_context=mp_context()) as pool:  # a bare pool first, as synth's
    print(pool.submit(probe_module.preloaded).result())
"""


@pytest.mark.skipif(start_method() != "forkserver", reason="preloading is the forkserver's")
def test_start_forkserver_preloads_for_every_later_pool(tmp_path):
    """A process has one forkserver and its first pool chose its preload: after bench's synth pool, each
    DataLoader worker imported torch itself. `start_forkserver` decides first, for bare pools after it too."""
    (tmp_path / "probe_module.py").write_text('import sys\n\ndef preloaded():\n    return "probe_preloaded" in sys.modules\n')
    (tmp_path / "probe_preloaded.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    seen = {}
    for how in ("start", "bare"):
        done = subprocess.run([sys.executable, "-c", _PRELOAD_PROBE, how], capture_output=True, text=True,
                              timeout=120, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        seen[how] = done.stdout.strip()
    assert seen == {"start": "True", "bare": "False"}


def _lock_name(_batch):
    """In a loader worker: the name of a `multiprocessing.Lock()` made there, as numcodecs' blosc makes one."""
    import multiprocessing

    return multiprocessing.Lock()._semlock.name


def test_a_lock_a_loader_worker_makes_is_never_a_named_semaphore():
    # numcodecs' blosc makes one at a worker's first decode: under forkserver a named semaphore (/dev/shm/sem.mp-*),
    # registered with the resource tracker and unregistered only at a clean exit; a worker that exits with the
    # killed trainer (exit_with_main_process) left one per worker for the tracker's "leaked semaphore" warning, and
    # in /dev/shm for good where the tracker was killed too (kill -9 of the process group)
    from torch.utils.data import DataLoader

    from liverctl.data import loaders

    loader = DataLoader(range(1), batch_size=1, collate_fn=_lock_name,
                        **loaders._worker_kwargs(loaders.LoaderPlan(1, None, False)))
    assert list(loader) == [None]


_CTRL_C_DURING_INIT = r"""
import builtins, os, signal
import torch, numcodecs.blosc  # noqa: F401  (loaded: only the signal's timing is staged below)
from liverctl.data import loaders
from liverctl.data.case_writer import worker_init

signal.signal(signal.SIGINT, signal.default_int_handler)  # as a forkserver's child starts
real_import, fired = builtins.__import__, []

def ctrl_c_in_first_import(name, *args, **kwargs):
    # an import the initializer makes is slow enough for a Ctrl-C to arrive in it (seen under load: numcodecs)
    if not fired and name != "signal":  # the initializer's own `import signal` (loaded already) comes first
        fired.append(name)
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)

builtins.__import__ = ctrl_c_in_first_import
{call}
builtins.__import__ = real_import
print("initialised after a Ctrl-C in", fired)
"""


@pytest.mark.parametrize("call", ["worker_init()", "loaders._worker_init(0)"])
def test_a_ctrl_c_while_a_worker_initialises_is_left_to_the_main_process(call):
    """Ctrl-C reaches every process of the group. A worker ignored SIGINT only at the end of its initializer,
    so one that was still importing (numcodecs' blosc, under load) printed a KeyboardInterrupt traceback (the
    SIGINT ingest test's flake); the initializer now ignores it first."""
    done = subprocess.run([sys.executable, "-c", _CTRL_C_DURING_INIT.replace("{call}", call)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("initialised after a Ctrl-C in"), done.stderr[-2000:]


# In a fresh interpreter, its own process group: start the forkserver with a preload that takes a while (torch
# takes seconds), Ctrl-C the whole group while it imports, then use the pool, as the trainer does after a Ctrl-C
# (it saves a checkpoint, with its DataLoader workers, and ends the run as interrupted).
_CTRL_C_DURING_PRELOAD = """
import multiprocessing.forkserver as fs, os, signal, sys, time
from pathlib import Path
from liverctl.workers import mp_context

if __name__ == "__main__":
    stops = []
    signal.signal(signal.SIGINT, lambda *_: stops.append("SIGINT"))  # the trainer's stop request
    ctx = mp_context(("slow_preload",))
    fs.ensure_running()
    while not Path(sys.argv[1]).exists():  # the forkserver is importing slow_preload
        time.sleep(0.02)
    os.killpg(0, signal.SIGINT)
    with ctx.Pool(1) as pool:
        print(stops, pool.apply(os.getpid) > 0)
"""


@pytest.mark.skipif(start_method() != "forkserver", reason="no forkserver on this platform")
def test_a_ctrl_c_while_the_forkserver_preloads_leaves_it_to_serve_the_trainer(tmp_path):
    """Ctrl-C in the first seconds of `train` reached the forkserver while it imported torch (multiprocessing
    protects it from ^C only after its preload): it died with a KeyboardInterrupt traceback on the terminal, and
    the trainer, saving on its Ctrl-C, failed with "EOFError: unexpected EOF" (run_end failed, exit 1) instead of
    ending the run as interrupted (kill_writers.py, train SIGINT 9-10 s after the start)."""
    marker = tmp_path / "importing"
    (tmp_path / "slow_preload.py").write_text(f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
                                               "time.sleep(2)\n")
    probe = tmp_path / "probe.py"
    probe.write_text(_CTRL_C_DURING_PRELOAD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(probe), str(marker)], capture_output=True, text=True, timeout=120,
                          env=env, start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["['SIGINT']", "True"] and "Traceback" not in done.stderr, done.stderr[-2000:]
