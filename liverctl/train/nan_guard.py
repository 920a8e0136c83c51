"""The NaN guard of DESIGN.md: skip a non-finite step, roll back after repeated ones, abort after a few
rollbacks. It only decides; the loop acts (skips, restores the last good state, stops) and writes events.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

OK, SKIP, ROLLBACK, ABORT = "ok", "skip_step", "rollback", "abort"


@dataclass
class NaNGuard:
    """Counts non-finite steps. `skip_limit` consecutive ones ask for a rollback; the rollback after
    `max_rollbacks` asks for an abort."""

    skip_limit: int = 3
    max_rollbacks: int = 3
    skipped: int = 0  # non-finite steps skipped over the whole run
    consecutive: int = 0
    rollbacks: int = 0

    def finite_step(self) -> str:
        self.consecutive = 0
        return OK

    def non_finite_step(self) -> str:
        self.skipped += 1
        self.consecutive += 1
        if self.consecutive < max(1, self.skip_limit):
            return SKIP
        return self.request_rollback()

    def request_rollback(self) -> str:
        """A rollback for any reason (repeated non-finite steps, a non-finite validation)."""
        self.consecutive = 0
        self.rollbacks += 1
        return ABORT if self.rollbacks > self.max_rollbacks else ROLLBACK

    def counts(self) -> dict[str, int]:
        return {"skipped": self.skipped, "rollbacks": self.rollbacks}

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "consecutive": self.consecutive, "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped = int(state.get("skipped", 0))
        self.consecutive = int(state.get("consecutive", 0))
        self.rollbacks = int(state.get("rollbacks", 0))


@dataclass
class GoodState:
    """The last known-good training state, kept in CPU memory: what `last.pt` holds (or the initial
    weights before the first checkpoint). Restoring it is the rollback."""

    parts: dict[str, Any] = field(default_factory=dict)

    def capture(self, **stateful: Any) -> None:
        from liverctl.runs.checkpoint import on_cpu

        self.parts = {name: on_cpu(obj.state_dict(), copy=True) for name, obj in stateful.items()}

    def restore(self, **stateful: Any) -> None:
        for name, obj in stateful.items():
            if name in self.parts:
                obj.load_state_dict(copy.deepcopy(self.parts[name]))
