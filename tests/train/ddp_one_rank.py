"""`torchrun ... tests/train/ddp_one_rank.py SCENARIO train ...`: the liverctl CLI with one rank (1) made to
differ from the others, as happens on a real machine, before it runs.

Scenarios:
- `no_room_after_epoch1`: rank 1's time budget has no room for a second epoch (its own clock; rank 0's also
  counts the checkpoints it writes, so the two never measure the same);
- `validation_out_of_time`: rank 1's time budget abandons its first validation after one batch (its own
  clock: rank 0's would have gone on to the end of its own share);
- `signal_in_validation`: SIGTERM reaches rank 1 during its first validation (torchrun forwards a signal to
  each rank in turn, so one rank can see it an epoch boundary earlier than another);
- `fails_in_step`: rank 1 fails on its own (an error of its own, not a collective's) at its second step, and
  rank 0, once its run has ended, waits for rank 1's process to be gone and torchrun to stop the survivors
  before its command prints its line (rank 0's teardown slower than rank 1's exit, as seen once in CI);
- `killed_in_step`: rank 1 is killed by SIGKILL at its second step (as the out-of-memory killer does): it leaves
  no failure of its own in the run folder; `rank_0_killed_in_step`: rank 0 is, and no rank writes the run's end;
- `fails_in_validation`: rank 1 fails on its own at its first validation batch, while rank 0 is in its own
  validation: rank 0 records each validation batch it finishes in `val-batches-0.txt` (in the working
  directory) and holds its second one until rank 1's failure is in the run folder (run 'ddp');
- `record_losses`: every rank appends the loss of each of its training batches to `losses-<rank>.txt` in
  the working directory (to compare with the losses the events report).
"""

from __future__ import annotations

import os
import signal
import sys


def _sigkill_at_step_1() -> None:
    """This rank kills itself with SIGKILL at its second step (as the out-of-memory killer does)."""
    from liverctl.train import loop

    guarded_step = loop.guarded_step

    def _killed_at_step_1(s, *args, **kwargs):
        if s.global_step == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return guarded_step(s, *args, **kwargs)

    loop.guarded_step = _killed_at_step_1


if __name__ == "__main__":  # the forkserver of the loader's workers imports this file again as __mp_main__
    scenario = sys.argv.pop(1)
    if scenario == "record_losses":
        import torch

        from liverctl.train import losses

        build_loss = losses.build_loss

        class _Recorded(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, logits, target):
                loss = self.inner(logits, target)
                if torch.is_grad_enabled():
                    with open(f"losses-{os.environ.get('RANK', '0')}.txt", "a", encoding="utf-8") as fh:
                        fh.write(f"{float(loss.detach())!r}\n")
                return loss

        losses.build_loss = lambda cfg: _Recorded(build_loss(cfg))
    elif scenario == "fails_in_validation":
        import time
        from pathlib import Path

        from liverctl.train import validation

        probabilities_at = validation.probabilities_at
        rank, batches = int(os.environ["RANK"]), []

        def _rank_1_fails_rank_0_validates_on(*args, **kwargs):
            if rank == 1:
                raise RuntimeError("CUDA error: an illegal memory access (rank 1's own failure)")
            batches.append(len(batches) + 1)
            if len(batches) == 2:
                deadline = time.monotonic() + 60
                while not Path("ddp", ".rank-1.failed").exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
            with open("val-batches-0.txt", "a", encoding="utf-8") as fh:
                fh.write(f"{len(batches)}\n")
            return probabilities_at(*args, **kwargs)

        validation.probabilities_at = _rank_1_fails_rank_0_validates_on
    elif scenario == "rank_0_killed_in_step" and int(os.environ.get("RANK", "0")) == 0:
        _sigkill_at_step_1()
    elif scenario == "rank_0_killed_in_step":
        pass
    elif scenario == "fails_in_step" and int(os.environ.get("RANK", "0")) == 0:
        import time
        from pathlib import Path

        from liverctl.train import loop

        close = loop._Loop.close

        def _siblings() -> set[int]:
            """The other processes torchrun started (this one's parent's other children)."""
            found = set()
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    fields = stat.read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == os.getppid() and fields[0] != "Z" and int(stat.parent.name) != os.getpid():
                    found.add(int(stat.parent.name))
            return found

        def _close_then_outlive_rank_1(self):
            close(self)
            deadline = time.monotonic() + 20  # torchrun's grace before its SIGKILL: 30 s
            while _siblings() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)  # torchrun looks at its workers every 0.1 s; its SIGTERM comes now

        loop._Loop.close = _close_then_outlive_rank_1
    elif int(os.environ.get("RANK", "0")) == 1:
        from liverctl.train import loop
        from liverctl.train.session import Session

        if scenario == "no_room_after_epoch1":
            class _OneEpoch(loop.TimeBudget):
                def room_for_epoch(self) -> bool:
                    return self.longest_epoch == 0

            loop.TimeBudget = _OneEpoch
        elif scenario == "validation_out_of_time":
            class _NoTimeToValidate(loop.TimeBudget):
                def validation_watch(self):
                    return lambda done, total: False

            loop.TimeBudget = _NoTimeToValidate
        elif scenario == "signal_in_validation":
            validate = Session.validate

            def _validate_then_signal(self, keep_going=None):
                out = validate(self, keep_going)
                if self.epoch == 0:
                    os.kill(os.getpid(), signal.SIGTERM)
                return out

            Session.validate = _validate_then_signal
        elif scenario == "killed_in_step":
            _sigkill_at_step_1()
        elif scenario == "fails_in_step":
            guarded_step = loop.guarded_step

            def _fails_at_step_1(s, *args, **kwargs):
                if s.global_step == 1:
                    raise RuntimeError("CUDA out of memory (rank 1's own failure)")
                return guarded_step(s, *args, **kwargs)

            loop.guarded_step = _fails_at_step_1
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    from liverctl.cli import app

    app(prog_name="liverctl")
