"""Fault injection for the reliability tests: ``DITSR_PLAN_FAULT=kill@POINT:STEP`` makes the run kill
itself with SIGKILL (no handler, no cleanup: what a node failure or the OOM killer does) when it reaches
POINT for STEP. Unset (always, outside the tests) every point is a no-op.

Points: ``step`` (once STEP steps are done, before their checkpoint is written), ``checkpoint-files``
(inside the checkpoint write of STEP steps, after the tensor files, before the manifest),
``checkpoint-manifest`` (after the manifest, before the rename into place), ``checkpoint-prune`` (after
the rename, before old checkpoints are pruned), ``final`` (after the final generator is saved, before
the EMA generator, the summary and the report; STEP = the total steps).
"""

from __future__ import annotations

import os
import signal

POINTS = ("step", "checkpoint-files", "checkpoint-manifest", "checkpoint-prune", "final")


def fault_point(name: str, step: int) -> None:
    spec = os.environ.get("DITSR_PLAN_FAULT")
    if spec and spec == f"kill@{name}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
