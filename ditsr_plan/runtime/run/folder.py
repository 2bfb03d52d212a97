"""The run folder: where a run writes, when a folder may be reused, and what a failed start leaves behind.

- ``--out`` names it; else the plan's ``run out=...``; else ``runs/<plan>-<YYYYmmdd-HHMMSS>`` (with
  ``--resume``: the newest ``runs/<plan>-*``).
- A folder that exists and is not empty is never reused silently: ``--resume`` continues it,
  ``--overwrite`` starts it again (its old content is deleted only once the new run has been built).
- A run that fails before its first step leaves nothing: a folder it created is removed again.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

from ..distributed import Ranks, barrier
from ..errors import RunFailure


class RunError(RunFailure):
    """A run that cannot start or continue, for a reason the user can fix."""


def default_run_dir(name: str, out_setting: str | None, resume: bool) -> Path:
    if out_setting:
        return Path(out_setting)
    if resume:
        previous = sorted(Path("runs").glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
        if not previous:
            raise RunError(f"--resume: no runs/{name}-* folder here; name the run folder with --out")
        return previous[-1]
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _is_empty(run_dir: Path) -> bool:
    return not run_dir.exists() or not any(run_dir.iterdir())


@contextlib.contextmanager
def run_folder(run_dir: Path, resume: bool, overwrite: bool, ranks: Ranks):
    """Prepare ``run_dir`` (every rank checks, so that all stop with the same error; rank 0 alone clears
    and creates). Yields ``started``: call it once the first step is done. A folder this call created is
    removed again when the run fails before that."""
    if not _is_empty(run_dir) and not resume:
        if not overwrite:
            raise RunError(
                f"run folder {run_dir} exists and is not empty: use --resume to continue it, "
                "--overwrite to start it again, or --out for another folder"
            )
        barrier(ranks)  # no rank is still looking at the folder when rank 0 clears it
        if ranks.main:
            shutil.rmtree(run_dir)
    fresh = _is_empty(run_dir)
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(ranks)
    state = {"started": False}
    try:
        yield lambda: state.__setitem__("started", True)
    except BaseException:
        if fresh and not state["started"] and ranks.main:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
