"""The run folder: where a run writes, when a folder may be reused, and what a failed start leaves behind.

- ``--out`` names it; else the plan's ``run out=...``; else ``runs/<plan>-<YYYYmmdd-HHMMSS>`` (with
  ``--resume``: the newest ``runs/<plan>-*``).
- A folder that exists and is not empty is never reused silently: ``--resume`` continues it,
  ``--overwrite`` starts it again (its old content is deleted only once the new run has done its first step).
  ``--overwrite`` clears only a run folder of this tool (one holding ``run.json`` or ``plan.json``), never
  the working directory or a folder above it: anything else is refused, naming a few of its entries, and
  nothing is touched.
- A run that fails before its first step leaves nothing: a folder it created is removed again, and a run
  that ``--overwrite`` was replacing (set aside as ``.NAME.replaced-PID`` until then) is put back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from ...terminal import shown
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


RUN_MARKERS = ("run.json", "plan.json")  # what every run of this tool writes before its first step


def _is_empty(run_dir: Path) -> bool:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} is a file, not a folder: choose another --out")
    return not run_dir.exists() or not any(run_dir.iterdir())


def _entries(folder: Path, count: int = 3) -> str:
    names = sorted(shown(p.name) for p in folder.iterdir())
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


def _is_run_folder(run_dir: Path) -> bool:
    return any((run_dir / name).is_file() for name in RUN_MARKERS)


def check_clearable(run_dir: Path) -> None:
    """Refuse ``--overwrite`` of anything but a run folder of this tool: a data set, a home folder, the
    working directory (or a folder above it) are never deleted."""
    here, target = Path.cwd().resolve(), run_dir.resolve()
    if target == here or target in here.parents:
        raise RunError(
            f"{run_dir} is the working directory{'' if target == here else ' or a folder above it'}: "
            "--overwrite clears only run folders; choose another --out"
        )
    if run_dir.is_symlink():
        raise RunError(
            f"{run_dir} is a symbolic link (to {target}): --overwrite clears only a run folder itself; "
            "give that folder or another --out"
        )
    if not _is_run_folder(run_dir):
        raise RunError(
            f"{run_dir} is not a run folder of ditsr-plan (holds {_entries(run_dir)}; no run.json or plan.json): "
            "--overwrite clears only run folders; choose another --out"
        )


class FolderState:
    """What :func:`run_folder` yields: call it once the first step is done; ``removed`` says whether a
    failure before that removed the folder this run created, ``restored`` whether the run that
    ``--overwrite`` was replacing was put back."""

    def __init__(self, fresh: bool, replaced: Path | None = None) -> None:
        self.fresh, self.started, self.removed, self.restored = fresh, False, False, False
        self.replaced = replaced  # the overwritten run, set aside until the new one has done a step

    def __call__(self) -> None:
        self.started = True
        if self.replaced is not None:
            shutil.rmtree(self.replaced, ignore_errors=True)
            self.replaced = None


@contextlib.contextmanager
def run_folder(run_dir: Path, resume: bool, overwrite: bool, ranks: Ranks):
    """Prepare ``run_dir`` (every rank checks, so that all stop with the same error; rank 0 alone clears
    and creates). Yields a :class:`FolderState`: call it once the first step is done. A folder this call
    created is removed again when the run fails before that."""
    replaced = None
    if not _is_empty(run_dir) and not resume:
        if not overwrite and not _is_run_folder(run_dir):
            raise RunError(
                f"{shown(run_dir)} is not a run folder of ditsr-plan (holds {_entries(run_dir)}; no run.json or "
                "plan.json): choose another --out (--resume and --overwrite take only run folders)"
            )
        if not overwrite:
            raise RunError(
                f"run folder {run_dir} exists and is not empty: use --resume to continue it, "
                "--overwrite to start it again, or --out for another folder"
            )
        check_clearable(run_dir)
        barrier(ranks)  # no rank is still looking at the folder when rank 0 sets it aside
        if ranks.main:
            replaced = run_dir.with_name(f".{run_dir.name}.replaced-{os.getpid()}")
            run_dir.rename(replaced)  # deleted after the new run's first step; put back if it fails before
    state = FolderState(_is_empty(run_dir), replaced)
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(ranks)
    try:
        yield state
    except BaseException:
        if state.fresh and not state.started and ranks.main:
            shutil.rmtree(run_dir, ignore_errors=True)
            state.removed = True
            if state.replaced is not None:
                state.replaced.rename(run_dir)
                state.restored, state.replaced = True, None
        raise
