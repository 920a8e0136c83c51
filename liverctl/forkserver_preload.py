"""Imported by the forkserver process only (`liverctl.workers.mp_context` preloads it), never elsewhere.

A SIGTERM sent to the whole process group (`timeout`, `kill -- -PGID`, a notebook's stop button) reaches
the forkserver too. Its death re-parents the workers it forked, and a DataLoader worker takes a new parent
for a dead trainer and exits, so the trainer's next batch failed ("DataLoader worker exited unexpectedly")
instead of the trainer saving its checkpoint and ending the run as interrupted. The forkserver cannot
outlive the main process (it exits when the main process's end of its pipe closes), so it is safe for
it to ignore SIGTERM. Workers inherit the setting: DataLoader workers end WORKER_SIGTERM_GRACE_S after a
SIGTERM (`loaders._worker_init`: time to finish the batch in flight), ingest and synth workers put the
default back (`liverctl.workers.default_sigterm`).
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
