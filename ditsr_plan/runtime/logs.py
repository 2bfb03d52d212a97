"""Run output: one JSON line per log step in ``metrics.jsonl``, TensorBoard events beside it when
tensorboard is installed, and a progress bar on a terminal (plain lines otherwise)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path


def _json_safe(x):
    """NaN and infinities as the strings "nan", "inf", "-inf": the lines stay valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


class MetricsLog:
    def __init__(self, run_dir: Path, resume_step: int | None, tensorboard: str):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # drop what was logged after the checkpoint: the resumed run logs those steps again
            # (a line cut short by a kill mid-write is dropped too)
            lines = self.path.read_text().splitlines()
            kept = [line for line in lines if (step := step_of(line)) is not None and step < resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run's lifetime
        self.tb = None
        if tensorboard != "off":
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
            except ImportError:
                if tensorboard == "on":
                    raise
        self.tb_dir = run_dir / "tensorboard" if self.tb else None

    def write(self, record: dict) -> None:
        self.fh.write(json.dumps(_json_safe(record), allow_nan=False) + "\n")
        self.fh.flush()
        if self.tb is None:
            return
        step = record["step"]
        if record.get("skipped"):
            return
        self.tb.add_scalar("loss", record["loss"], step)
        for name, term in record["terms"].items():
            self.tb.add_scalar(f"weight/{name}", term["weight"], step)
            if term["raw"] is not None:
                self.tb.add_scalar(f"raw/{name}", term["raw"], step)
                self.tb.add_scalar(f"weighted/{name}", term["weighted"], step)
        for name, value in record["lr"].items():
            self.tb.add_scalar(f"lr/{name}", value, step)
        if record.get("grad_norm") is not None:
            self.tb.add_scalar("grad_norm", record["grad_norm"], step)
        for name, d in (record.get("discriminator") or {}).items():
            for key, value in d.items():
                if value is not None:
                    self.tb.add_scalar(f"d/{name}/{key}", value, step)

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON lines file (none when it does not exist), without a line a kill cut short."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


SPECIAL = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _metric_values(values: dict) -> dict:
    return {k: SPECIAL.get(v, v) if isinstance(v, str) else v for k, v in values.items()}


def read_evals(path: Path) -> list[dict]:
    """The records of an ``eval.jsonl``, their metric values as numbers again (a perfect image's PSNR is
    written as the string "inf", as in metrics.jsonl, so that every line is valid JSON)."""
    records = read_jsonl(path)
    for record in records:
        for group in ("images", "bicubic"):
            if isinstance(record.get(group), dict):
                record[group] = {role: _metric_values(v) for role, v in record[group].items()}
        if isinstance(record.get("mean"), dict):
            record["mean"] = _metric_values(record["mean"])
    return records


def write_jsonl_line(path: Path, record: dict) -> None:
    """Append one record (NaN and infinities as strings) to a JSON lines file."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(_json_safe(record), allow_nan=False) + "\n")


def step_of(line: str) -> int | None:
    """The step of a JSON lines record; None for a blank or cut-short line."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class Progress:
    """step/total, stage, it/s, ETA and loss: a tqdm bar on a terminal, a line every 10% otherwise."""

    def __init__(self, total: int, start: int, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.start = total, start
        self.t0 = time.perf_counter()
        self.bar = None
        self.next_line = start
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, file=self.stream, unit="step", dynamic_ncols=True)

    def update(self, step: int, stage: str, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"stage {stage} loss {loss:.4f}", refresh=False)
            self.bar.update(1)
            return
        done = step + 1
        if done >= self.next_line or done == self.total:
            elapsed = time.perf_counter() - self.t0
            rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            print(
                f"step {done}/{self.total}  stage {stage}  {rate:.2f} it/s  ETA {eta:.0f}s  loss {loss:.4f}",
                file=self.stream,
                flush=True,
            )
            self.next_line = done + max(1, self.total // 10)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
