"""``ditsr-plan run``: train a compiled plan into a run folder, with checkpoints, validation and resume.

The run folder holds ``run.json`` (how the run was started), ``plan.json`` (the compiled graph),
``metrics.jsonl``, ``eval.jsonl``, ``tensorboard/``, ``checkpoints/step-N`` (the state after N steps), and
at the end ``final/`` (the generator in diffusers' format), ``summary.json`` and ``report.html``.

:func:`run_plan` reads top to bottom: build, resume, then the loop -- train a step, log it, evaluate,
checkpoint, stop -- each a named helper of :class:`Run`.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ditsr_plan import __version__
from ditsr_plan.compiler.graph import ScheduleGraph
from ditsr_plan.terminal import shown

from ..distributed import (
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
from ..records import (
    MetricsRecord,
    TermValues,
    eval_summary,
    json_safe,
    read_evals,
    read_metrics,
    truncate_jsonl,
)
from ..train.data import StepBatches
from ..train.device import place, set_threads, usable_cores
from ..train.trainer import StepRecord, Trainer, dynamo_graphs
from .checkpoint import save_checkpoint
from .console import say, silence
from .faults import fault_point
from .final_line import final_versus_bicubic
from .folder import RunError, run_folder
from .header import header
from .invocation import Invocation
from .logs import MetricsLog, NoLog, Progress
from .resume import refuse_other_schedule, resume
from .signals import RunInterrupted, Signals, stopped_at_once
from .watch_keep import Watches, update_best

if TYPE_CHECKING:  # imported when a run evaluates
    from ..validate.evaluator import Evaluator


@dataclass
class RunResult:
    run_dir: Path
    steps_done: int  # steps this call trained (after a resume: since the checkpoint)
    first_loss: float | None  # of the whole run, resumed parts included
    last_loss: float | None


def run_plan(
    graph: ScheduleGraph,
    run_dir: Path,
    resume: bool = False,
    force: bool = False,
    overwrite: bool = False,
    ranks: Ranks | None = None,
    invocation: Invocation | None = None,
    quiet: bool = False,
) -> RunResult:
    """Train ``graph`` into ``run_dir``. Under torchrun (``ranks`` from the environment when not given)
    every process calls this; rank 0's ``run_dir`` is the one used. ``quiet``: no progress lines."""
    ranks = from_env() if ranks is None else ranks
    placement = place(
        graph.block("run").device,
        graph.block("run").precision,
        ranks.local_rank if ranks.enabled else None,
    )
    ranks = join(ranks, placement.device.type)
    silence(not ranks.main)
    invocation = invocation or Invocation(graph.path, graph.time_scale)
    folder, run = None, None
    try:
        run_dir = Path(str(broadcast_object(ranks, str(run_dir))))
        _check_same_plan(ranks, graph)
        if resume and not force:
            refuse_other_schedule(graph, run_dir, invocation)
        # a run that cannot be built writes nothing
        trainer = Trainer(graph, placement, ranks, note=None if quiet else say)
        with run_folder(run_dir, resume, overwrite, ranks) as folder:
            run = Run(graph, trainer, run_dir, invocation, quiet)
            run.start(resume, force)
            return run.train(folder)
    except KeyboardInterrupt as exc:  # a second signal, or one before the loop: said, never silent
        done = run.done if run is not None else None
        message = stopped_at_once(exc, run_dir, folder, done, invocation.command(run_dir))
        raise RunInterrupted(message, getattr(exc, "signum", signal.SIGINT)) from None
    finally:
        silence(False)
        leave(ranks)


def _check_same_plan(ranks: Ranks, graph: ScheduleGraph) -> None:
    hashes = gather_objects(ranks, graph.hash)
    if len(set(hashes)) > 1:
        raise DistributedError(
            "the ranks compiled different schedule graphs (hashes "
            + ", ".join(f"rank {r}: {h}" for r, h in enumerate(hashes))
            + "): every process must read the same plan, overrides and time scale"
        )


def capped_workers(workers: int, processes_here: int = 1) -> int:
    """``data workers=`` capped to the cores this process may use (shared among a torchrun's processes here):
    more worker processes than cores only compete with the training for them. Said once when capped."""
    cores = max(1, len(usable_cores()) // max(1, processes_here))
    if workers <= cores:
        return workers
    say(f"data: workers={workers} capped to {cores}, the CPU cores this process may use")
    return cores


def _processes_here(ranks: Ranks) -> int:
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE), which share its cores."""
    import os

    return int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world)) if ranks.enabled else 1


class Run:
    """One run's loop state and the helpers the loop calls."""

    def __init__(self, graph: ScheduleGraph, trainer: Trainer, run_dir: Path, invocation: Invocation, quiet: bool):
        self.graph, self.trainer, self.run_dir, self.invocation = graph, trainer, run_dir, invocation
        self.ranks = trainer.ranks
        self.settings = graph.block("run")
        self.log_settings = graph.block("log")
        self.quiet = quiet
        self.start_step = 0
        self.done: int | None = None  # steps done so far, once the loop has begun
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.bad_steps = 0
        self.digests: list[str] = []
        self.recompiles: list[int] = []  # steps after the first at which torch.compile built a new graph
        self.evaluator: Evaluator | None = None
        self.watches = Watches(graph.watches)
        self.eval_settings = graph.block("eval")
        self.eval_every = self.eval_settings.every if self.eval_settings else 0
        self._said_skipped: dict[str, bool] = {}

    # ---- before the first step --------------------------------------------------------------------

    def start(self, resuming: bool, force: bool) -> None:
        ckpt = resume(self.trainer, self.graph, self.run_dir, force, self.invocation) if resuming else None
        if ckpt is not None:
            self.start_step = ckpt.step
            self.first_loss = ckpt.state().get("first_loss")
        previous = ckpt.state().get("threads") if ckpt else None
        set_threads(self.settings.threads, _processes_here(self.ranks), previous)
        if self.ranks.main:
            (self.run_dir / "plan.json").write_text(json.dumps(self.graph.to_json(), indent=1))
            self.invocation.save(self.run_dir)
            self._start_evaluator(resuming)
        say(header(self.graph, self.trainer, self.run_dir, self.start_step, self.evaluator, self.invocation))

    def _start_evaluator(self, resuming: bool) -> None:
        if not self.eval_settings:
            return
        from ..validate.evaluator import Evaluator

        self.evaluator = Evaluator(self.trainer, self.eval_settings, self.run_dir)
        if resuming:  # evals after the checkpoint run again; streaks continue across the resume
            truncate_jsonl(self.evaluator.jsonl, lambda step: step <= self.start_step)
            for previous in self.evaluator.records():
                self.watches.check(previous)

    # ---- the loop ----------------------------------------------------------------------------------

    def train(self, started) -> RunResult:
        trainer, graph = self.trainer, self.graph
        total, log = graph.total_steps, self.log_settings
        self.metrics = MetricsLog(self.run_dir, self.start_step, log.tensorboard) if self.ranks.main else NoLog()
        stages = tuple((s.name, s.start, s.end) for s in graph.stages)
        quiet = self.quiet or not self.ranks.main
        self.progress = Progress(total, self.start_step, self._evals_left, quiet=quiet, stages=stages)
        if not quiet:
            say(
                f"step {self.start_step} comes first: it includes the warm-up (first allocations, lazy set-up) and "
                "is slower than the steps after it; the ETA leaves it out once later steps are timed"
            )
        grads = log.grads == "on" or (log.grads == "auto" and trainer.placement.device.type == "cpu")
        stopped = None
        self.since, self.steps_since = time.perf_counter(), 0  # throughput since the last log line
        self.done = self.start_step
        with Signals() as signals:
            try:
                for step, batches in self._batches():
                    is_log = step % log.every == 0 or step == total - 1
                    shadow, diagnose = is_log and log.shadow, is_log and grads
                    record = trainer.train_step(
                        step,
                        batches,
                        shadow=shadow and self.ranks.main,
                        grads=diagnose and self.ranks.main,
                        on_micro=lambda done, n, step=step: self.progress.micro(step, done, n),
                    )
                    self.log_step(record, is_log)
                    started()
                    done = self.done = step + 1
                    fault_point("step", done)
                    stopped = self.maybe_evaluate(done)
                    signalled = self.signal_vote(signals)
                    self.maybe_checkpoint(done, force=bool(stopped or signalled))
                    self.progress.update(step, graph.stage_at(step).name, record.loss)
                    if signalled:
                        self.interrupted(done, signalled)
                    if stopped:
                        break
            finally:
                self.progress.close()
                self.metrics.close()
        return self.finish(stopped)

    def _batches(self):
        """(step, its micro-batches) from the step after the checkpoint on, prefetched by DataLoader workers."""
        trainer, accum = self.trainer, self.trainer.accum
        data = trainer.data
        workers = capped_workers(data.settings.workers, _processes_here(self.ranks))
        cuda = trainer.placement.device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            StepBatches(data, self.start_step, self.graph.total_steps, accum, trainer.first_sample),
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            persistent_workers=workers > 0,  # no re-spawn (and re-import of torch) per pass
            prefetch_factor=4 if workers else None,  # images decoded and degraded ahead of the step
            pin_memory=cuda,  # page-locked batches: asynchronous copies to the GPU
        )
        pending = []
        for step, micro, batch in loader:
            self._note_skipped(batch.skipped)
            pending.append(batch)
            if micro == accum - 1:
                yield int(step), pending
                pending = []

    def _note_skipped(self, skipped: dict[str, str]) -> None:
        """An unreadable image (found by this process or a worker): said once, with its name, and counted."""
        known = self.trainer.data.stats.skipped
        for path, why in skipped.items():
            if path not in known or not self._said_skipped.get(path):
                say(f"data: skipping unreadable image {shown(path)} ({shown(why)})")
                self._said_skipped[path] = True
            known[path] = why

    def _evals_left(self, done: int) -> int:
        if not self.eval_every:
            return 0
        total = self.graph.total_steps
        return (total - done) // self.eval_every + (total % self.eval_every != 0 and done < total)

    # ---- the helpers the loop calls ------------------------------------------------------------------

    def log_step(self, record: StepRecord, is_log: bool) -> None:
        """Write the metrics line of a log step (and of a skipped or recompiled step, or one with flags);
        count non-finite steps and stop after ``run nan_steps`` in a row."""
        flags = [f for name, rec in record.after_step.items() for f in self.trainer.terms[name].flags(record.step, rec)]
        for flag in flags:
            say(f"step {record.step}: warning: {flag['message']}")
        if record.recompiled:
            self.recompiles.append(record.step)
            say(
                f"step {record.step}: torch.compile built a new graph ({record.dynamo_graphs} so far); "
                "a graph per step would make compile=true slower than eager"
            )
        self.steps_since += 1
        if is_log or record.nonfinite or record.recompiled or flags:
            now = time.perf_counter()
            images = self.trainer.data.batch_size * self.trainer.accum * self.ranks.world * self.steps_since
            self.metrics.write(self.metrics_record(record, images / (now - self.since), flags))
            self.since, self.steps_since = now, 0
        self.bad_steps = self.bad_steps + 1 if record.nonfinite else 0
        if record.nonfinite:
            say(f"step {record.step} skipped: non-finite {', '.join(record.nonfinite)}")
            if self.bad_steps >= self.settings.nan_steps:
                raise RunError(
                    f"{self.bad_steps} steps in a row with a non-finite loss or gradient, the last at step "
                    f"{record.step} ({', '.join(record.nonfinite)}); the newest checkpoint holds the last good "
                    "state. Lower the learning rate or the weights of those terms, then --resume --force"
                )
        else:
            self.first_loss = record.loss if self.first_loss is None else self.first_loss
            self.last_loss = record.loss

    def metrics_record(self, record: StepRecord, images_per_s: float | None, flags: list[dict]) -> MetricsRecord:
        graph = self.graph
        weights = graph.weights_at(record.step)
        live = set(graph.live_terms(record.step))
        terms = {}
        for name in graph.terms:
            raw, w = record.raw.get(name), round(weights[name], 12)
            terms[name] = TermValues(w, raw, None if raw is None else w * raw, name in live)
        return MetricsRecord(
            step=record.step,
            stage=graph.stage_at(record.step).name,
            loss=record.loss,
            terms=terms,
            lr={n: weights[n] for n in graph.knobs if n not in graph.terms},
            grad_norm=record.grad_norm,
            discriminator=record.after_step or None,
            gradients=record.gradients,
            skipped=record.nonfinite or None,
            dynamo_graphs=record.dynamo_graphs,
            images_per_s=images_per_s,
            flags=flags,
        )

    def maybe_evaluate(self, done: int) -> dict | None:
        """Validate after ``done`` steps when it is time; the watch event that stops the run, if one fires."""
        if not self.eval_every or not (done % self.eval_every == 0 or done == self.graph.total_steps):
            return None
        stop = None
        if self.ranks.main:
            assert self.evaluator is not None  # rank 0 evaluates when the plan has an eval
            started = time.perf_counter()
            record = self.evaluator.run(done)
            record.watch = self.watches.check(record)
            self.evaluator.append(record)
            self.progress.evaluated(time.perf_counter() - started)
            say(f"eval after {done} steps: {eval_summary(record)}")
            for flag in record.flags:
                say(f"eval after {done} steps: warning: {flag['message']}")
            for event in record.watch:
                where = f" ({event['at']})" if event.get("at") else ""
                say(f"watch fired after {done} steps: {event['rule']}{where} (value {event['value']:.4g})")
                if event["action"] == "stop":
                    stop = event
        stopped = broadcast_object(self.ranks, stop)  # a watch on rank 0 stops every rank
        return stopped if isinstance(stopped, dict) else None

    def signal_vote(self, signals: Signals) -> int | None:
        """A signal on any rank stops every rank after this step."""
        if not self.ranks.enabled:
            return signals.received
        votes = sum_floats(self.ranks, [1.0 if signals.received else 0.0], self.trainer.placement.device)
        return signals.received or (15 if votes[0] else None)  # SIGTERM on the ranks that got nothing

    def maybe_checkpoint(self, done: int, force: bool) -> None:
        """A checkpoint every ``run checkpoint_every`` steps, at the end, at a stop, and at every eval when
        the plan keeps its best checkpoints (then ``RUN/best`` is updated)."""
        evaluated = self.eval_every and (done % self.eval_every == 0 or done == self.graph.total_steps)
        keep = evaluated and self.graph.keep
        if not (force or keep or done % self.settings.checkpoint_every == 0 or done == self.graph.total_steps):
            return
        if self.ranks.enabled:
            self.digests = self._check_same_weights(done)
        if self.ranks.main:
            tensors, trainer_state = self.trainer.state_dict()
            state = {
                "tool_version": __version__,
                "plan": self.graph.name,
                "plan_hash": self.graph.hash,
                "first_loss": self.first_loss,
                "threads": torch.get_num_threads(),
                "trainer": trainer_state,
            }
            save_checkpoint(self.run_dir / "checkpoints", done, tensors, state, self.settings.keep)
        if keep and self.ranks.main:
            assert self.graph.keep is not None and self.evaluator is not None  # keep: the plan keeps the best
            kept = update_best(
                self.graph.keep, self.evaluator.records(), self.run_dir / "checkpoints", self.run_dir / "best"
            )
            say("best checkpoints: " + ", ".join(f"step {k['step']}" for k in kept))

    def _check_same_weights(self, done: int) -> list[str]:
        """Every rank's weights digest; a run whose ranks disagree stops (DDP keeps them identical)."""
        digests = gather_objects(self.ranks, weights_digest(list(self.trainer.trained_tensors().values())))
        if len(set(digests)) > 1:
            raise DistributedError(
                f"after {done} steps the ranks hold different weights (digests {', '.join(map(str, digests))}); "
                "the newest checkpoint holds rank 0's state"
            )
        return [str(d) for d in digests]

    def interrupted(self, done: int, signum: int) -> None:
        barrier(self.ranks)  # the checkpoint is written before any rank exits
        raise RunInterrupted(
            f"interrupted after {done} of {self.graph.total_steps} steps: checkpoint "
            f"{self.run_dir / 'checkpoints' / f'step-{done:08d}'} written; continue with: "
            f"{self.invocation.command(self.run_dir)}",
            signum,
        )

    # ---- after the last step ------------------------------------------------------------------------

    def finish(self, stopped: dict | None) -> RunResult:
        total = self.graph.total_steps
        steps_done = stopped["step"] if stopped else total
        result = RunResult(self.run_dir, steps_done - self.start_step, self.first_loss, self.last_loss)
        if not self.ranks.main:
            barrier(self.ranks)  # wait for rank 0's final weights and report
            return result
        final = self.run_dir / "final"
        model: Any = self.trainer.model  # every generator has save_final (generators/__init__.py)
        model.save_final(final / "generator")
        fault_point("final", total)
        if self.trainer.ema is not None:
            with self.trainer.ema.applied(self.trainer.model):
                model.save_final(final / "generator_ema")
        summary = json_safe(self.summary(steps_done, stopped))  # a watch's value may be nan: strict JSON
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
        from ..analysis.report import write_report

        report = write_report(self.run_dir)
        evals = read_evals(self.run_dir) if self.evaluator is not None else []
        final_line = final_versus_bicubic(evals[-1] if evals else None)
        if final_line:
            say(final_line)
        if stopped:
            where = f" at {stopped['at']}" if stopped.get("at") else ""
            scaled = f", scaled by the time scale {self.graph.time_scale:g}" if self.graph.time_scale != 1 else ""
            rule = stopped.get("rule", stopped["watch"])
            say(f"stopped after {steps_done} of {total} steps by the rule '{rule}'{where}{scaled}")
        form = "safetensors state dict" if self.graph.blocks["model"].kind == "custom" else "diffusers format"
        say(f"done: {steps_done} steps; final generator in {final}/ ({form}); report: {report}")
        barrier(self.ranks)
        return result

    def summary(self, steps_done: int, stopped: dict | None) -> dict:
        run = self.settings
        eval_flags = [f for record in read_evals(self.run_dir) for f in record.flags]
        return {
            "plan": self.graph.name,
            "hash": self.graph.hash,
            "steps": steps_done,
            "total_steps": self.graph.total_steps,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "skipped_images": self.trainer.data.stats.skipped,
            "finished": time.time(),
            "stopped_by": stopped,
            "flags": [f for record in read_metrics(self.run_dir) for f in record.flags] + eval_flags,
            "evals_not_finite": [f["step"] for f in eval_flags if f.get("flag") == "eval_not_finite"],
            "compile": {
                "backend": run.compile_backend,
                "dynamo_graphs": dynamo_graphs(),
                "recompiled_at": self.recompiles,
            }
            if self.trainer.compiled
            else None,
            "ranks": {"world": self.ranks.world, "backend": self.ranks.backend, "weights_digests": self.digests}
            if self.ranks.enabled
            else None,
        }


__all__ = ["SINGLE", "RunError", "RunInterrupted", "RunResult", "run_plan"]
