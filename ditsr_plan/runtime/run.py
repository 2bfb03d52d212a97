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

from .checkpoint import Checkpoint, newest_complete, optimizer_from_flat, optimizer_to_flat, save_checkpoint
from .data import Batch, StepBatches
from .device import place
from .logs import MetricsLog, Progress
from .rules import Watches, update_best
from .terms.patchgan import PatchGan
from .trainer import StepRecord, Trainer


class RunError(RuntimeError):
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


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _trainer_state(trainer: Trainer, step: int, graph: ScheduleGraph) -> tuple[dict, dict]:
    tensors = {"generator": trainer.model.state_dict()}
    state: dict = {
        "tool_version": __version__,
        "plan": graph.name,
        "plan_hash": graph.hash,
        "checked_terms": sorted(trainer.checked),
        "data": {"position": step, "skipped": trainer.data.stats.skipped},
    }
    if trainer.ema is not None:
        tensors["ema"] = trainer.ema.model.state_dict()
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
        "images_per_s": images_per_s,
    }


def _header(graph: ScheduleGraph, trainer: Trainer, run_dir: Path, start: int, evaluator=None) -> str:
    p = trainer.placement
    lines = [
        f"ditsr-plan {__version__} · plan {graph.name} · hash {graph.hash} · "
        f"{format_steps(graph.total_steps)} steps"
        + (f" (time scale {graph.time_scale:g})" if graph.time_scale != 1 else ""),
        f"device {p.device} ({p.precision}) · data {graph.blocks['data'].kind} "
        f"({len(trainer.data)} images, crop {trainer.data.crop}, batch {trainer.data.batch_size} x accum "
        f"{trainer.accum}) · latent {graph.blocks['latent'].kind} (x{trainer.latent.factor}, "
        f"{trainer.latent.channels} ch) · pixel patch {trainer.patch} px (margin {trainer.margin})",
    ]
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


def _prepare_folder(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise RunError(
                f"run folder {run_dir} exists and is not empty: use --resume to continue it, "
                "--overwrite to start it again, or --out for another folder"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _resume(trainer: Trainer, graph: ScheduleGraph, run_dir: Path, force: bool) -> int:
    """Restore the newest complete checkpoint; the number of steps it holds (0 when there is none)."""
    ckpt = newest_complete(run_dir / "checkpoints", report=_say)
    if ckpt is None:
        if not (run_dir / "plan.json").exists():
            raise RunError(f"--resume: {run_dir} holds no run to resume")
        _say(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting from step 0")
        return 0
    state = ckpt.state()
    if state["plan_hash"] != graph.hash and not force:
        raise RunError(
            f"checkpoint {ckpt.path} was made from plan hash {state['plan_hash']}, this plan "
            f"compiles to {graph.hash}; use --force to resume anyway (check 'ditsr-plan diff')"
        )
    _restore(trainer, ckpt)
    return ckpt.step


def _evaluate(evaluator, watches: Watches, done: int) -> dict | None:
    """Validate after ``done`` steps; the watch event that stops the run, if one fires."""
    result = evaluator.run(done)
    result["watch"] = watches.check(result)
    evaluator.append(result)
    _say(f"eval after {done} steps: " + ", ".join(f"{k} {v:.3f}" for k, v in result["mean"].items() if v is not None))
    stop = None
    for event in result["watch"]:
        _say(f"watch fired after {done} steps: {event['watch']} (value {event['value']:.4g}): {event['action']}")
        if event["action"] == "stop":
            stop = event
    return stop


def run_plan(
    graph: ScheduleGraph, run_dir: Path, resume: bool = False, force: bool = False, overwrite: bool = False
) -> RunResult:
    run = graph.blocks["run"].values
    log = graph.blocks["log"].values
    ckpt_dir = run_dir / "checkpoints"
    _prepare_folder(run_dir, resume, overwrite)
    placement = place(run["device"], run["precision"])
    trainer = Trainer(graph, placement)
    start = _resume(trainer, graph, run_dir, force) if resume else 0
    (run_dir / "plan.json").write_text(json.dumps(graph.to_json(), indent=1))
    evaluator = None
    if "eval" in graph.blocks:
        from .evaluation import Evaluator

        evaluator = Evaluator(trainer, dict(graph.blocks["eval"].values), run_dir)
        if resume and evaluator.jsonl.exists():  # evals after the checkpoint run again
            kept = [line for line in evaluator.jsonl.read_text().splitlines() if json.loads(line)["step"] <= start]
            evaluator.jsonl.write_text("".join(line + "\n" for line in kept))
    _say(_header(graph, trainer, run_dir, start, evaluator))

    metrics = MetricsLog(run_dir, start if resume else None, log["tensorboard"])
    total, accum = graph.total_steps, trainer.accum
    loader = torch.utils.data.DataLoader(
        StepBatches(trainer.data, start, total, accum),
        batch_size=None,
        shuffle=False,
        num_workers=trainer.data.settings.get("workers", 0),
    )
    grads = log["grads"] == "on" or (log["grads"] == "auto" and placement.device.type == "cpu")
    progress = Progress(total, start)
    watches = Watches(graph.watches)
    if evaluator is not None:  # streaks continue across a resume
        for previous in evaluator.records():
            watches.check(previous)
    stopped = None
    first_loss = last_loss = None
    bad_steps = 0
    pending: list[Batch] = []
    since, steps_since = time.perf_counter(), 0  # throughput over the steps since the last log line
    with _Signals() as signals:
        try:
            for step, micro, hr, lr_up in loader:
                pending.append(Batch(hr, lr_up))
                if micro < accum - 1:
                    continue
                step = int(step)
                is_log = step % log["every"] == 0 or step == total - 1
                record = trainer.train_step(step, pending, shadow=is_log and log["shadow"], grads=is_log and grads)
                pending = []
                steps_since += 1
                if is_log or record.nonfinite:
                    now = time.perf_counter()
                    images = trainer.data.batch_size * accum * steps_since
                    metrics.write(_record_json(graph, record, images / (now - since)))
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
                every = graph.blocks["eval"].values["every"] if evaluator else 0
                evaluated = evaluator is not None and (done % every == 0 or done == total)
                if evaluated:
                    stopped = _evaluate(evaluator, watches, done)
                checkpoint = done % run["checkpoint_every"] == 0 or done == total or stopped
                if checkpoint or signals.received or (evaluated and graph.keep):
                    tensors, state = _trainer_state(trainer, done, graph)
                    save_checkpoint(ckpt_dir, done, tensors, state, run["keep"])
                if evaluated and graph.keep:
                    kept = update_best(graph.keep, evaluator.records(), ckpt_dir, run_dir / "best")
                    _say("best checkpoints: " + ", ".join(f"step {k['step']}" for k in kept))
                progress.update(step, graph.stage_at(step).name, record.loss)
                if signals.received:
                    raise RunInterrupted(
                        f"interrupted after step {done}: checkpoint {ckpt_dir / f'step-{done:08d}'} written; "
                        "'ditsr-plan run PLAN --out RUN --resume' continues",
                        signals.received,
                    )
                if stopped:
                    break
        finally:
            progress.close()
            metrics.close()
    final = run_dir / "final"
    trainer.model.dit.save_pretrained(final / "generator", safe_serialization=True)
    if trainer.ema is not None:
        trainer.ema.model.dit.save_pretrained(final / "generator_ema", safe_serialization=True)
    steps_done = stopped["step"] if stopped else total
    summary = {
        "plan": graph.name,
        "hash": graph.hash,
        "steps": steps_done,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "skipped_images": trainer.data.stats.skipped,
        "finished": time.time(),
        "stopped_by": stopped,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    from .report import write_report

    report = write_report(run_dir)
    if stopped:
        _say(f"stopped after {steps_done} of {total} steps by 'watch {stopped['watch']}: stop'")
    _say(f"done: {steps_done} steps; final generator in {final}/ (diffusers format); report: {report}")
    return RunResult(run_dir, steps_done - start, first_loss, last_loss)
