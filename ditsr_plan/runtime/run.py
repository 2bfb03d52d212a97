"""``ditsr-plan run``: train a compiled plan into a run folder, with checkpoints and resume.

The run folder holds ``plan.json`` (the compiled graph), ``metrics.jsonl``, ``tensorboard/``,
``checkpoints/step-N`` (the state after N steps) and, at the end, ``final/generator`` and
``final/generator_ema`` in diffusers' own format (``save_pretrained``).
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ditsr_plan import __version__
from ditsr_plan.compiler.graph import ScheduleGraph
from ditsr_plan.dsl.numbers import format_steps

from . import faults
from .checkpoint import (
    Checkpoint,
    newest_complete,
    optimizer_from_flat,
    optimizer_to_flat,
    remove_partial,
    save_checkpoint,
)
from .data import Batch, StepBatches
from .device import place, set_threads
from .distributed import (
    SINGLE,
    DistributedError,
    Ranks,
    barrier,
    broadcast_object,
    from_env,
    gather_objects,
    join,
    leave,
    sum_floats,
    weights_digest,
)
from .errors import RunFailure
from .health import DiscriminatorHealth
from .logs import MetricsLog, Progress, read_jsonl, step_of
from .rules import Watches, update_best
from .terms.patchgan import PatchGan
from .trainer import StepRecord, Trainer, compiled_graphs


class RunError(RunFailure):
    """A run that cannot start or continue, for a reason the user can fix."""


class RunInterrupted(RuntimeError):
    """SIGINT or SIGTERM: the run wrote a checkpoint and stopped; ``--resume`` continues it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _Signals:
    """SIGINT/SIGTERM set a flag; the loop checkpoints after the current step and stops. A second
    signal stops at once (Python's default handling)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signum
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        _say(f"{signal.Signals(signum).name} received: finishing this step, then writing a checkpoint")

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@dataclass
class RunResult:
    run_dir: Path
    steps_done: int
    first_loss: float | None
    last_loss: float | None


_QUIET = False  # ranks other than 0 of a DDP run say nothing (rank 0 speaks for the run)


def _say(message: str) -> None:
    if not _QUIET:
        print(message, file=sys.stderr, flush=True)


class _NoLog:
    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


class _NoProgress:
    def update(self, *args) -> None:
        pass

    def close(self) -> None:
        pass


def _trainer_state(trainer: Trainer, step: int, graph: ScheduleGraph, health: DiscriminatorHealth) -> tuple[dict, dict]:
    tensors = {"generator": trainer.model.state_dict()}
    state: dict = {
        "tool_version": __version__,
        "plan": graph.name,
        "plan_hash": graph.hash,
        "checked_terms": sorted(trainer.checked),
        "data": {"position": step, "skipped": trainer.data.stats.skipped},
        "discriminator_health": health.state(),
        "threads": torch.get_num_threads(),
    }
    if trainer.ema is not None:
        tensors["ema"] = trainer.ema.model.state_dict()
        state["ema"] = trainer.ema.state()
    opt_tensors, state["optimizer"] = optimizer_to_flat(trainer.optimizer)
    tensors["optimizer"] = opt_tensors
    state["discriminator_optimizers"] = {}
    for name, term in trainer.terms.items():
        if isinstance(term, PatchGan):
            tensors[f"disc_{name}"] = term.disc.state_dict()
            d_tensors, state["discriminator_optimizers"][name] = optimizer_to_flat(term.optimizer)
            tensors[f"disc_optimizer_{name}"] = d_tensors
    tensors["rng"] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng"]["torch_cuda"] = torch.cuda.get_rng_state()
    return tensors, state


def _restore(trainer: Trainer, ckpt: Checkpoint) -> None:
    state = ckpt.state()
    trainer.model.load_state_dict(ckpt.tensors("generator"))
    if trainer.ema is not None:
        trainer.ema.model.load_state_dict(ckpt.tensors("ema"))
        trainer.ema.restore(state["ema"])
    optimizer_from_flat(trainer.optimizer, ckpt.tensors("optimizer"), state["optimizer"])
    for name, term in trainer.terms.items():
        if isinstance(term, PatchGan):
            term.disc.load_state_dict(ckpt.tensors(f"disc_{name}"))
            optimizer_from_flat(
                term.optimizer, ckpt.tensors(f"disc_optimizer_{name}"), state["discriminator_optimizers"][name]
            )
    rng = ckpt.tensors("rng")
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["torch_cuda"])
    trainer.checked = set(state["checked_terms"])
    trainer.data.stats.skipped.update(state["data"]["skipped"])


def _record_json(graph: ScheduleGraph, record: StepRecord, images_per_s: float | None) -> dict:
    weights = graph.weights_at(record.step)
    live = set(graph.live_terms(record.step))
    terms = {}
    for name in graph.terms:
        raw, w = record.raw.get(name), round(weights[name], 12)
        terms[name] = {"weight": w, "raw": raw, "weighted": None if raw is None else w * raw, "live": name in live}
    return {
        "step": record.step,
        "stage": graph.stage_at(record.step).name,
        "loss": record.loss,
        "terms": terms,
        "lr": {n: weights[n] for n in graph.knobs if n not in graph.terms},
        "grad_norm": record.grad_norm,
        "discriminator": record.discriminator or None,
        "gradients": record.gradients,
        "skipped": record.nonfinite or None,
        "compiled_graphs": record.compiled_graphs,
        "images_per_s": images_per_s,
    }


def _header(graph: ScheduleGraph, trainer: Trainer, run_dir: Path, start: int, evaluator=None) -> str:
    p = trainer.placement
    lines = [
        f"ditsr-plan {__version__} · plan {graph.name} · hash {graph.hash} · "
        f"{format_steps(graph.total_steps)} steps"
        + (f" (time scale {graph.time_scale:g})" if graph.time_scale != 1 else ""),
        f"device {p.device} ({p.precision}, {torch.get_num_threads()} CPU threads"
        + (f", torch.compile {graph.blocks['run'].values['compile_backend']}" if trainer.compiled else "")
        + f") · data {graph.blocks['data'].kind} "
        f"({len(trainer.data)} images, crop {trainer.data.crop}, batch {trainer.data.batch_size} x accum "
        f"{trainer.accum}) · latent {graph.blocks['latent'].kind} (x{trainer.latent.factor}, "
        f"{trainer.latent.channels} ch) · pixel patch {trainer.patch} px (margin {trainer.margin})",
    ]
    if trainer.ranks.enabled:
        r = trainer.ranks
        lines.append(
            f"DDP: {r.world} processes ({r.backend}); global batch {trainer.data.batch_size * r.world * trainer.accum} "
            f"= {trainer.data.batch_size} per rank x {r.world} ranks x accum {trainer.accum}; "
            "rank 0 logs and checkpoints"
        )
    lines.append("parameters: " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in trainer.parameter_counts().items()))
    for stage in graph.stages:
        live = [n for n in graph.terms if any(a < stage.end and b > stage.start for a, b in graph.knobs[n].live)]
        lines.append(
            f"  stage {stage.name} {format_steps(stage.start)}..{format_steps(stage.end)}: "
            f"{', '.join(live) or 'nothing live'}"
        )
    never = [n for n in graph.terms if not graph.knobs[n].live]
    if never:
        lines.append(f"  never live (never computed): {', '.join(never)}")
    if evaluator is not None:
        ev = graph.blocks["eval"].values
        lines.append(
            f"eval every {format_steps(ev['every'])} steps on {', '.join(i.role for i in evaluator.images)} "
            f"(DDIM {ev['steps']} steps, EMA weights); {evaluator.lpips_note()}"
        )
    lines.append(
        f"writing to {run_dir}/ (metrics.jsonl, {'eval.jsonl, eval/, ' if evaluator else ''}checkpoints/, final/)"
    )
    if start:
        lines.append(f"resuming after step {start} (checkpoint step-{start:08d})")
    return "\n".join(lines)


def _prepare_folder(run_dir: Path, resume: bool, overwrite: bool, ranks: Ranks = SINGLE) -> None:
    """Every rank checks (so that all stop with the same error); rank 0 alone clears and creates."""
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise RunError(
                f"run folder {run_dir} exists and is not empty: use --resume to continue it, "
                "--overwrite to start it again, or --out for another folder"
            )
        barrier(ranks)  # no rank is still looking at the folder when rank 0 clears it
        if ranks.main:
            shutil.rmtree(run_dir)
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(ranks)


def _all_flags(run_dir: Path) -> list[dict]:
    """Every flag of the run, resumed parts included (from metrics.jsonl)."""
    return [flag for record in read_jsonl(run_dir / "metrics.jsonl") for flag in record.get("flags") or []]


def _processes_here(ranks: Ranks) -> int:
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE), which share its cores."""
    import os

    return int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world)) if ranks.enabled else 1


def _check_same_plan(ranks: Ranks, graph: ScheduleGraph) -> None:
    hashes = gather_objects(ranks, graph.hash)
    if len(set(hashes)) > 1:
        raise DistributedError(
            "the ranks compiled different schedule graphs (hashes "
            + ", ".join(f"rank {r}: {h}" for r, h in enumerate(hashes))
            + "): every process must read the same plan, overrides and time scale"
        )


def _trained_modules(trainer: Trainer) -> list[torch.nn.Module]:
    modules: list[torch.nn.Module] = [trainer.model]
    if trainer.ema is not None:
        modules.append(trainer.ema.model)
    modules += [term.disc for term in trainer.terms.values() if isinstance(term, PatchGan)]
    return modules


def _check_same_weights(ranks: Ranks, trainer: Trainer, done: int) -> list[str]:
    """Every rank's weights digest; a run whose ranks disagree stops (DDP keeps them identical)."""
    digests = gather_objects(ranks, weights_digest(_trained_modules(trainer)))
    if len(set(digests)) > 1:
        raise DistributedError(
            f"after {done} steps the ranks hold different weights (digests {', '.join(map(str, digests))}); "
            "the newest checkpoint holds rank 0's state"
        )
    return [str(d) for d in digests]


def _resume(trainer: Trainer, graph: ScheduleGraph, run_dir: Path, force: bool) -> Checkpoint | None:
    """Restore the newest complete checkpoint and return it (None when there is none: start at step 0)."""
    if trainer.ranks.main:
        for partial in remove_partial(run_dir / "checkpoints"):
            _say(f"--resume: removed {partial.name}, a checkpoint whose write never finished")
    barrier(trainer.ranks)
    ckpt = newest_complete(run_dir / "checkpoints", report=_say)
    if ckpt is None:
        if not (run_dir / "plan.json").exists():
            raise RunError(f"--resume: {run_dir} holds no run to resume")
        _say(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
        return None
    state = ckpt.state()
    if state["plan_hash"] != graph.hash and not force:
        raise RunError(
            f"checkpoint {ckpt.path} was made from plan hash {state['plan_hash']}, this plan "
            f"compiles to {graph.hash}; use --force to resume anyway (check 'ditsr-plan diff')"
        )
    _restore(trainer, ckpt)
    return ckpt


def eval_summary(record: dict) -> str:
    """``psnr 31.20 (bicubic 39.10), ssim ...``: an eval's mean metrics beside the bicubic baseline's."""
    base = record.get("bicubic", {}).get("mean", {})
    parts = []
    for key, value in record["mean"].items():
        if value is None or key == "perfect":
            continue
        digits = 2 if key.startswith("psnr") else 3
        text = f"{key} {value:.{digits}f}"
        if base.get(key) is not None:
            text += f" (bicubic {base[key]:.{digits}f})"
        parts.append(text)
    return ", ".join(parts)


def _evaluate(evaluator, watches: Watches, done: int) -> dict | None:
    """Validate after ``done`` steps; the watch event that stops the run, if one fires."""
    result = evaluator.run(done)
    result["watch"] = watches.check(result)
    evaluator.append(result)
    _say(f"eval after {done} steps: {eval_summary(result)}")
    stop = None
    for event in result["watch"]:
        _say(f"watch fired after {done} steps: {event['watch']} (value {event['value']:.4g}): {event['action']}")
        if event["action"] == "stop":
            stop = event
    return stop


def run_plan(
    graph: ScheduleGraph,
    run_dir: Path,
    resume: bool = False,
    force: bool = False,
    overwrite: bool = False,
    ranks: Ranks | None = None,
) -> RunResult:
    """Train ``graph`` into ``run_dir``. Under torchrun (``ranks`` from the environment when not given)
    every process calls this; rank 0's ``run_dir`` is the one used."""
    global _QUIET
    run = graph.blocks["run"].values
    ranks = from_env() if ranks is None else ranks
    placement = place(run["device"], run["precision"], ranks.local_rank if ranks.enabled else None)
    ranks = join(ranks, placement.device.type)
    _QUIET = not ranks.main
    try:
        run_dir = Path(str(broadcast_object(ranks, str(run_dir))))
        _check_same_plan(ranks, graph)
        return _train(graph, run_dir, resume, force, overwrite, ranks, placement)
    finally:
        _QUIET = False
        leave(ranks)


def _train(graph, run_dir: Path, resume: bool, force: bool, overwrite: bool, ranks: Ranks, placement) -> RunResult:
    run = graph.blocks["run"].values
    log = graph.blocks["log"].values
    ckpt_dir = run_dir / "checkpoints"
    main = ranks.main
    _prepare_folder(run_dir, resume, overwrite, ranks)
    trainer = Trainer(graph, placement, ranks)
    resumed = _resume(trainer, graph, run_dir, force) if resume else None
    start = resumed.step if resumed else 0
    set_threads(run["threads"], _processes_here(ranks), resumed.state().get("threads") if resumed else None)
    if main:
        (run_dir / "plan.json").write_text(json.dumps(graph.to_json(), indent=1))
    evaluator = None
    every = 0
    if "eval" in graph.blocks:
        every = graph.blocks["eval"].values["every"]
        if main:
            from .evaluation import Evaluator

            evaluator = Evaluator(trainer, dict(graph.blocks["eval"].values), run_dir)
            if resume and evaluator.jsonl.exists():  # evals after the checkpoint run again
                lines = evaluator.jsonl.read_text().splitlines()
                kept = [line for line in lines if (step := step_of(line)) is not None and step <= start]
                evaluator.jsonl.write_text("".join(line + "\n" for line in kept))
    _say(_header(graph, trainer, run_dir, start, evaluator))

    metrics = MetricsLog(run_dir, start if resume else None, log["tensorboard"]) if main else _NoLog()
    total, accum = graph.total_steps, trainer.accum
    loader = torch.utils.data.DataLoader(
        StepBatches(trainer.data, start, total, accum, trainer.first_sample),
        batch_size=None,
        shuffle=False,
        num_workers=trainer.data.settings.get("workers", 0),
    )
    grads = log["grads"] == "on" or (log["grads"] == "auto" and placement.device.type == "cpu")
    progress = Progress(total, start) if main else _NoProgress()
    watches = Watches(graph.watches)
    if evaluator is not None:  # streaks continue across a resume
        for previous in evaluator.records():
            watches.check(previous)
    stopped = None
    first_loss = last_loss = None
    bad_steps = 0
    pending: list[Batch] = []
    digests: list[str] = []
    recompiles: list[int] = []  # steps after the first at which torch.compile built a new graph
    health = DiscriminatorHealth({n: dict(t.settings) for n, t in graph.terms.items() if t.kind == "patchgan"})
    if resumed:  # streaks go on across a resume
        health.restore(resumed.state().get("discriminator_health", {}))
    since, steps_since = time.perf_counter(), 0  # throughput over the steps since the last log line
    with _Signals() as signals:
        try:
            for step, micro, hr, lr_up in loader:
                pending.append(Batch(hr, lr_up))
                if micro < accum - 1:
                    continue
                step = int(step)
                is_log = step % log["every"] == 0 or step == total - 1
                record = trainer.train_step(
                    step, pending, shadow=is_log and log["shadow"] and main, grads=is_log and grads and main
                )
                pending = []
                steps_since += 1
                if record.recompiled:
                    recompiles.append(step)
                    _say(
                        f"step {step}: torch.compile built a new graph ({record.compiled_graphs} so far); "
                        "a graph per step would make compile=true slower than eager"
                    )
                new_flags = health.check(step, record.discriminator) if record.discriminator else []
                for flag in new_flags:
                    _say(f"step {step}: warning: {flag['message']}")
                if is_log or record.nonfinite or record.recompiled or new_flags:
                    now = time.perf_counter()
                    images = trainer.data.batch_size * accum * ranks.world * steps_since
                    line = _record_json(graph, record, images / (now - since))
                    if new_flags:
                        line["flags"] = new_flags
                    metrics.write(line)
                    since, steps_since = now, 0
                bad_steps = bad_steps + 1 if record.nonfinite else 0
                if record.nonfinite:
                    _say(f"step {step} skipped: non-finite {', '.join(record.nonfinite)}")
                    if bad_steps >= run["nan_steps"]:
                        raise RunError(
                            f"{bad_steps} steps in a row with a non-finite loss or gradient, the last at step {step} "
                            f"({', '.join(record.nonfinite)}); the newest checkpoint holds the last good state. "
                            "Lower the learning rate or the weights of those terms, then --resume --force"
                        )
                else:
                    first_loss = record.loss if first_loss is None else first_loss
                    last_loss = record.loss
                done = step + 1
                faults.point("step", done)
                evaluated = every > 0 and (done % every == 0 or done == total)
                if evaluated:
                    stopped = _evaluate(evaluator, watches, done) if main else None
                    stopped = broadcast_object(ranks, stopped)  # a watch on rank 0 stops every rank
                # a signal on any rank stops every rank after this step
                signalled = signals.received
                if ranks.enabled:
                    votes = sum_floats(ranks, [1.0 if signals.received else 0.0], placement.device)
                    signalled = signals.received or (int(signal.SIGTERM) if votes[0] else None)
                checkpoint = done % run["checkpoint_every"] == 0 or done == total or stopped
                if checkpoint or signalled or (evaluated and graph.keep):
                    if ranks.enabled:
                        digests = _check_same_weights(ranks, trainer, done)
                    if main:
                        tensors, state = _trainer_state(trainer, done, graph, health)
                        save_checkpoint(ckpt_dir, done, tensors, state, run["keep"])
                if evaluated and graph.keep and main:
                    kept = update_best(graph.keep, evaluator.records(), ckpt_dir, run_dir / "best")
                    _say("best checkpoints: " + ", ".join(f"step {k['step']}" for k in kept))
                progress.update(step, graph.stage_at(step).name, record.loss)
                if signalled:
                    barrier(ranks)  # the checkpoint is written before any rank exits
                    raise RunInterrupted(
                        f"interrupted after step {done}: checkpoint {ckpt_dir / f'step-{done:08d}'} written; "
                        "'ditsr-plan run PLAN --out RUN --resume' continues",
                        signalled,
                    )
                if stopped:
                    break
        finally:
            progress.close()
            metrics.close()
    steps_done = stopped["step"] if stopped else total
    if not main:
        barrier(ranks)  # wait for rank 0's final weights and report
        return RunResult(run_dir, steps_done - start, first_loss, last_loss)
    final = run_dir / "final"
    trainer.model.dit.save_pretrained(final / "generator", safe_serialization=True)
    faults.point("final", total)
    if trainer.ema is not None:
        trainer.ema.model.dit.save_pretrained(final / "generator_ema", safe_serialization=True)
    summary = {
        "plan": graph.name,
        "hash": graph.hash,
        "steps": steps_done,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "skipped_images": trainer.data.stats.skipped,
        "finished": time.time(),
        "stopped_by": stopped,
        "flags": _all_flags(run_dir),
        "compile": {
            "backend": run["compile_backend"],
            "graphs": compiled_graphs(),
            "recompiled_at": recompiles,
        }
        if trainer.compiled
        else None,
        "ranks": {"world": ranks.world, "backend": ranks.backend, "weights_digests": digests}
        if ranks.enabled
        else None,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    from .report import write_report

    report = write_report(run_dir)
    if stopped:
        _say(f"stopped after {steps_done} of {total} steps by 'watch {stopped['watch']}: stop'")
    _say(f"done: {steps_done} steps; final generator in {final}/ (diffusers format); report: {report}")
    barrier(ranks)
    return RunResult(run_dir, steps_done - start, first_loss, last_loss)
