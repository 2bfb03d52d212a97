"""``--resume``: the newest complete checkpoint, put back into the trainer -- or a message that says why not.

A checkpoint made from another schedule graph is refused, naming what differs: the time scale, the
``--set`` overrides (both kept in ``run.json``), or the plan file itself. ``--force`` resumes anyway and
says where the step lands in the new schedule.
"""

from __future__ import annotations

from pathlib import Path

from ditsr_plan.compiler.graph import ScheduleGraph
from ditsr_plan.settings.numbers import format_steps

from ..analysis.status import read_graph
from ..distributed import barrier
from ..errors import RunFailure
from ..train.generators import fingerprint
from .checkpoint import Checkpoint, newest_complete, newest_written, remove_partial
from .console import say
from .folder import RunError
from .invocation import Invocation


def _why_different(run_dir: Path, graph: ScheduleGraph, invocation: Invocation | None) -> str:
    before = Invocation.load(run_dir)
    if before is not None and invocation is not None:
        differences = invocation.differences(before)
        if differences:
            return "; ".join(differences)
    return (
        f"the plan changed since the run started (ditsr-plan diff {run_dir} {graph.path} shows how)"
        if before is None or invocation is None or before.plan == invocation.plan
        else "the plan differs"
    )


def _landing(run_dir: Path, graph: ScheduleGraph, step: int) -> str:
    """Where step ``step`` of the run's own schedule lands in ``graph``'s."""
    old = read_graph(run_dir)

    def where(g: ScheduleGraph) -> str:
        if step >= g.total_steps:
            return f"past the end of its {format_steps(g.total_steps)} steps"
        return f"in stage {g.stage_at(step).name} of {format_steps(g.total_steps)} steps"

    return f"after step {step}: the run was {where(old)}; it continues {where(graph)}"


def resume(
    trainer, graph: ScheduleGraph, run_dir: Path, force: bool, invocation: Invocation | None
) -> Checkpoint | None:
    """Restore the newest complete checkpoint and return it (None when there is none: start at step 0)."""
    if trainer.ranks.main:
        for partial in remove_partial(run_dir / "checkpoints"):
            say(f"--resume: removed {partial.name}, a checkpoint whose write never finished")
    barrier(trainer.ranks)
    ckpt = newest_complete(run_dir / "checkpoints", report=say)
    if ckpt is None:
        if not (run_dir / "plan.json").exists():
            raise RunError(f"--resume: {run_dir} holds no run to resume")
        say(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
        return None
    state = ckpt.state()
    if state.get("plan_hash") != graph.hash:
        why = _why_different(run_dir, graph, invocation)
        if not force:
            raise _other_schedule(ckpt, state, graph, why)
        say(f"--force: resuming in another schedule ({why}); {_landing(run_dir, graph, ckpt.step)}")
    base = state["trainer"].get("base")
    check_base(f"checkpoint {ckpt.path}", base, fingerprint(trainer.model), "the model now loads")
    try:
        trainer.load_state_dict(ckpt.tensors, state["trainer"])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:  # CheckpointError passes through
        if isinstance(exc, RunFailure):
            raise
        raise RunError(
            f"checkpoint {ckpt.path} does not fit this run ({type(exc).__name__}: {str(exc)[:200]}): was the plan, "
            "the model or the checkpoint changed? Resume with what the run started with, or start a new run folder"
        ) from None
    return ckpt


def _other_schedule(ckpt: Checkpoint, state: dict, graph: ScheduleGraph, why: str) -> RunError:
    return RunError(
        f"checkpoint {ckpt.path} was made from another schedule (hash {state.get('plan_hash')}, now "
        f"{graph.hash}): {why}. Resume with the run's own settings, or --force to continue in this schedule"
    )


def refuse_other_schedule(graph: ScheduleGraph, run_dir: Path, invocation: Invocation | None) -> None:
    """Before anything is built: a --resume (without --force) of a run made from another schedule is
    refused at once (building the models first would only make the user wait for the same message). Reads
    the newest finished checkpoint's state.json only; verifying its files is left to :func:`resume`."""
    ckpt = newest_written(run_dir / "checkpoints")
    if ckpt is None:
        return
    try:
        state = ckpt.state()
    except RunFailure:
        return  # a damaged checkpoint: resume() reports it and falls back
    if state.get("plan_hash") != graph.hash:
        raise _other_schedule(ckpt, state, graph, _why_different(run_dir, graph, invocation))


def check_base(what: str, base: dict | None, now: dict | None, loads: str, folder: str | None = None) -> None:
    """A checkpoint of a fine-tune (``what``: "checkpoint RUN/checkpoints/step-N", "RUN/final/generator")
    holds only the trained tensors: it fits only the base it was made on. ``base``: the fingerprint it
    recorded; ``now``: the one of the model built now (``loads`` says by what, ``folder`` from where);
    different digests are refused, naming both."""
    base = base if isinstance(base, dict) else None
    if (base or {}).get("digest") == (now or {}).get("digest"):
        return
    was = f"base {base.get('digest')} ({base.get('class')})" if base else "a model trained from scratch"
    where = f" from {folder}" if folder else ""
    raise RunError(
        f"{what} was made on {was}, but {loads} base "
        f"{now['digest'] if now else '(none: from scratch)'}"
        f"{' (' + str(now.get('class')) + ')' if now else ''}{where}: its trained tensors fit only their own base. "
        "Point model path= at the base the run started with"
    )
