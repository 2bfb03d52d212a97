"""Run output: one :class:`~ditsr_plan.runtime.records.MetricsRecord` per log step in ``metrics.jsonl``,
TensorBoard events beside it when tensorboard is installed, and progress on the console (a tqdm bar on a
terminal, a line every 10 % otherwise).

Step numbers: a step is named by its index in the schedule (0-based: the numbering of stage bounds and of
``show --at``); a state -- a checkpoint, an eval -- by the number of steps done before it, which is the
index of the next step. ``metrics.jsonl``'s last line of a 1200-step run is step 1199; its last eval and
checkpoint are "after 1200 steps" (``step-00001200``); the console says ``1200/1200 steps (step 1199)``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..records import MetricsRecord, json_safe, truncate_jsonl


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None, tensorboard: str):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:
            # drop what was logged after the checkpoint: the resumed run logs those steps again
            truncate_jsonl(self.path, lambda step: step < resume_step)
        self.fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run's lifetime
        self.tb = None
        if tensorboard != "off":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError:
                if tensorboard == "on":
                    raise

    def write(self, record: MetricsRecord) -> None:
        self.fh.write(json.dumps(json_safe(record.to_json()), allow_nan=False) + "\n")
        self.fh.flush()
        if self.tb is None or record.skipped:
            return
        step = record.step
        self.tb.add_scalar("loss", record.loss, step)
        for name, term in record.terms.items():
            self.tb.add_scalar(f"weight/{name}", term.weight, step)
            if term.raw is not None:
                self.tb.add_scalar(f"raw/{name}", term.raw, step)
                self.tb.add_scalar(f"weighted/{name}", term.weighted, step)
        for name, value in record.lr.items():
            self.tb.add_scalar(f"lr/{name}", value, step)
        if record.grad_norm is not None:
            self.tb.add_scalar("grad_norm", record.grad_norm, step)
        for name, d in (record.discriminator or {}).items():
            for key, value in d.items():
                if value is not None:
                    self.tb.add_scalar(f"d/{name}/{key}", value, step)

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


class NoLog:
    """What ranks other than 0 log: nothing."""

    def write(self, record: MetricsRecord) -> None:
        pass

    def close(self) -> None:
        pass


MICRO_EVERY = 10.0  # seconds into a step before its micro-batches are counted on the console, and between lines


class Progress:
    """Steps done of the total, the step, stage, it/s, ETA and loss. The ETA knows that stages differ in
    speed: each stage's steps are timed on their own (a stage with pixel terms and a discriminator is slower
    than a reconstruction-only one), a stage not yet reached is counted at the slowest speed seen so far, the
    run's first step (warm-up) is left out once there are others, and the evals still to come are counted at
    the measured time per eval. A step slower than ``MICRO_EVERY`` seconds counts its micro-batches.
    ``stages``: (name, start, end) of the plan's stages. ``quiet``: nothing at all."""

    def __init__(
        self,
        total: int,
        start: int,
        evals_left=lambda done: 0,
        quiet: bool = False,
        stream=None,
        stages: tuple[tuple[str, int, int], ...] = (),
    ):
        self.stream = stream or sys.stderr
        self.total, self.start, self.quiet = total, start, quiet
        self.evals_left = evals_left  # done -> how many evals remain after that many steps
        self.stages = stages or (("", 0, total),)
        self.t0 = self.mark = self.micro_said = time.perf_counter()
        self.eval_seconds: list[float] = []
        self.evals_since_mark = 0.0
        self.step_seconds: dict[str, list[float]] = {}  # per stage, the time of each step (warm-up first)
        self.warmup_stage: str | None = None
        self.bar = None
        self.next_line = start
        if self.stream.isatty() and not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, file=self.stream, unit="step", dynamic_ncols=True)

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def evaluated(self, seconds: float) -> None:
        self.eval_seconds.append(seconds)
        self.evals_since_mark += seconds

    def micro(self, step: int, done: int, total: int) -> None:
        """Micro-batch ``done`` of ``total`` of ``step`` finished: said when the step is slow."""
        now = time.perf_counter()
        if self.quiet or total < 2 or done == total or now - max(self.mark, self.micro_said) < MICRO_EVERY:
            return
        warm = ", the warm-up included" if self.warmup_stage is None else ""
        self._say(f"step {step}: micro-batch {done}/{total} ({now - self.mark:.0f} s into the step{warm})")
        self.micro_said = now

    def _stage_time(self, name: str) -> float | None:
        """Seconds per step of a stage: its own steps (not the warm-up once there are others), else the
        slowest stage seen; None before any step."""
        times = self.step_seconds.get(name)
        if times:
            kept = times[1:] if name == self.warmup_stage and len(times) > 1 else times
            return sum(kept) / len(kept)
        seen = [t for t in (self._stage_time(n) for n in self.step_seconds) if t is not None]
        return max(seen) if seen else None

    def _estimate(self, done: int) -> tuple[float, list[str]]:
        """(seconds left, the stages still to come that no step has timed yet)."""
        seconds, untimed = 0.0, []
        for name, start, end in self.stages:
            left = max(0, min(end, self.total) - max(start, done))
            if left:
                per_step = self._stage_time(name)
                if per_step is None:
                    return float("inf"), [name]
                seconds += left * per_step
                untimed += [] if name in self.step_seconds else [name]
        per_eval = sum(self.eval_seconds) / len(self.eval_seconds) if self.eval_seconds else 0.0
        return seconds + per_eval * self.evals_left(done), untimed

    def eta(self, done: int) -> float:
        return self._estimate(done)[0]

    def eta_text(self, done: int) -> str:
        """``ETA 185s``, or ``ETA >185s (stage C not timed yet)`` while a stage to come (which may compute more
        terms) has only the speed of the stages seen so far."""
        seconds, untimed = self._estimate(done)
        if not untimed:
            return f"ETA {seconds:.0f}s"
        return f"ETA >{seconds:.0f}s (stage {', '.join(untimed)} not timed yet)"

    def _timed(self, stage: str) -> None:
        now = time.perf_counter()
        self.step_seconds.setdefault(stage, []).append(max(0.0, now - self.mark - self.evals_since_mark))
        if self.warmup_stage is None:
            self.warmup_stage = stage
        self.mark = now
        self.evals_since_mark = 0.0

    def update(self, step: int, stage: str, loss: float) -> None:
        self._timed(stage)
        if self.quiet:
            return
        done = step + 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"step {step} stage {stage} loss {loss:.4f} {self.eta_text(done)}", refresh=False)
            self.bar.update(1)
            return
        if done >= self.next_line or done == self.total:
            training = time.perf_counter() - self.t0 - sum(self.eval_seconds)
            rate = (done - self.start) / training if training > 0 else 0.0
            print(
                f"{done}/{self.total} steps (step {step}, stage {stage})  {rate:.2f} it/s  "
                f"{self.eta_text(done)}  loss {loss:.4f}",
                file=self.stream,
                flush=True,
            )
            self.next_line = done + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def count_eta(done: int, total: int, seconds: float) -> str:
    """``3/10 (12.5 s each, ETA 88 s)``: items done of a total, at the speed so far."""
    if not done:
        return f"{done}/{total}"
    each = seconds / done
    return f"{done}/{total} ({each:.1f} s each, ETA {each * (total - done):.0f} s)"
