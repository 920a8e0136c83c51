"""Imported by the forkserver process only (`liverctl.workers.mp_context` preloads it), never elsewhere.

A SIGTERM sent to the whole process group (`timeout`, `kill -- -PGID`, a notebook's stop button) reaches
the forkserver too. Its death re-parents the workers it forked, and a DataLoader worker takes a new parent
for a dead trainer and exits, so the trainer's next batch failed ("DataLoader worker exited unexpectedly")
instead of the trainer saving its checkpoint and ending the run as interrupted. The forkserver cannot
outlive the main process (it exits when the main process's end of its pipe closes), so it is safe for
it to ignore SIGTERM. Workers inherit the setting: DataLoader workers end WORKER_SIGTERM_GRACE_S after a
SIGTERM (`loaders._worker_init`: time to finish the batch in flight), ingest and synth workers put the
default back (`liverctl.workers.default_sigterm`).

Ctrl-C (SIGINT) reaches the whole group too. multiprocessing's forkserver ignores it, but only once its preload
(torch: seconds) is done: a Ctrl-C in the first seconds of `train` killed the forkserver mid-import, with a
KeyboardInterrupt traceback on the terminal, and the trainer, which saves and ends the run as interrupted on a
Ctrl-C, failed instead ("EOFError: unexpected EOF", exit 1). It ignores SIGINT from here on; its children
inherit that (DataLoader and ingest workers ignore it anyway; synth's put Python's handler back).
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
