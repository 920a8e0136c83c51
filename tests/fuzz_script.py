"""scripts/fuzz_readers.py as a module, for the seeded fuzz tests of the readers of untrusted files: they draw their
damaged files with the script's own mutations (`mutate_nifti`, `mutate_state`, `mutate_json`), a bounded number
of cases each, and call the readers in-process (the script forks each case under a memory and time limit).
`outcome(read)`: "ok", or "refused" for one LiverctlError of one line; any other exception propagates."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from liverctl.errors import LiverctlError

ROOT = Path(__file__).resolve().parents[1]


def load_fuzz_script():
    if "fuzz_readers" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fuzz_readers", ROOT / "scripts" / "fuzz_readers.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["fuzz_readers"] = module
        spec.loader.exec_module(module)
    return sys.modules["fuzz_readers"]


def outcome(read, what: str = "", names: Path | None = None) -> str:
    """`read()`'s outcome; `what`: the case, named in the failure of any other exception; `names`: the file a
    refusal must begin with."""
    try:
        read()
    except LiverctlError as exc:
        assert "\n" not in str(exc), (what, str(exc))
        assert names is None or str(exc).startswith(f"{names}: "), (what, str(exc))
        return "refused"
    except Exception as exc:
        raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc
    return "ok"
