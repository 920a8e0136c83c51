"""How liverctl starts worker processes (liverctl/workers.py)."""

from __future__ import annotations

import subprocess
import sys

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
