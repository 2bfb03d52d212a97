"""The lines of a run folder's ``metrics.jsonl`` and ``eval.jsonl``: one typed record each, written and read
through these classes (the run writes them; validation, the report and ``compare`` read them). Imports no
torch: the analysis room reads run folders with it.

JSON has no NaN or infinity: non-finite numbers are written as the strings ``"nan"``, ``"inf"`` and
``"-inf"`` (every line stays valid JSON) and read back as numbers. A line cut short by a kill is skipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPECIAL = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def json_safe(x: Any) -> Any:
    """NaN and infinities as the strings "nan", "inf", "-inf", everywhere in ``x``."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def _numbers(values: dict | None) -> dict | None:
    """A dict of metric values with the special strings read back as numbers."""
    if values is None:
        return None
    return {k: SPECIAL.get(v, v) if isinstance(v, str) else v for k, v in values.items()}


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON lines file (none when it does not exist), without a line a kill cut short."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def append_jsonl(path: Path, record: dict) -> None:
    """Append one record to a JSON lines file (see :func:`json_safe`)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(json_safe(record), allow_nan=False) + "\n")


def step_of(line: str) -> int | None:
    """The step of a JSON lines record; None for a blank or cut-short line."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def truncate_jsonl(path: Path, keep) -> None:
    """Keep the lines whose step satisfies ``keep(step)`` (and drop a line cut short): what a resumed run
    does to the lines written after its checkpoint, which it writes again."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if (step := step_of(line)) is not None and keep(step)]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


@dataclass
class TermValues:
    """One term at one step: its weight, its raw (unweighted) value, and weight x raw."""

    weight: float
    raw: float | None
    weighted: float | None
    live: bool


@dataclass
class MetricsRecord:
    """A line of ``metrics.jsonl``: the step with index ``step`` (0-based, the schedule's numbering)."""

    step: int
    stage: str
    loss: float
    terms: dict[str, TermValues]
    lr: dict[str, float]
    grad_norm: float | None = None
    discriminator: dict[str, dict] | None = None  # a term's own after-step training (the PatchGAN's D)
    gradients: dict | None = None
    skipped: list[str] | None = None  # why the step was skipped: the non-finite terms, or "gradient"
    dynamo_graphs: int | None = None  # run compile=true: graphs torch.compile has built so far
    images_per_s: float | None = None
    flags: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        if not self.flags:
            del data["flags"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> MetricsRecord:
        terms = {
            name: TermValues(
                t["weight"], SPECIAL.get(t["raw"], t["raw"]), SPECIAL.get(t["weighted"], t["weighted"]), t["live"]
            )
            for name, t in data["terms"].items()
        }
        loss = data["loss"]
        return cls(
            step=data["step"],
            stage=data["stage"],
            loss=SPECIAL.get(loss, loss) if isinstance(loss, str) else loss,
            terms=terms,
            lr=data.get("lr", {}),
            grad_norm=data.get("grad_norm"),
            discriminator=data.get("discriminator"),
            gradients=data.get("gradients"),
            skipped=data.get("skipped"),
            dynamo_graphs=data.get("dynamo_graphs"),
            images_per_s=data.get("images_per_s"),
            flags=data.get("flags") or [],
        )


def read_metrics(run_dir: Path) -> list[MetricsRecord]:
    return [MetricsRecord.from_json(r) for r in read_jsonl(run_dir / "metrics.jsonl")]


@dataclass
class EvalRecord:
    """A line of ``eval.jsonl``: validation after ``step`` steps (the state checkpoint ``step-N`` holds).

    ``images``: role -> metrics; ``mean``: their aggregate (``validate.metrics.mean_metrics``); ``bicubic``:
    the same of the bicubic-upsampled LR, ``{"mean": ..., role: ...}``; ``settings``: the eval settings
    (``compare`` warns when runs differ in them)."""

    step: int
    images: dict[str, dict]
    mean: dict[str, Any]
    bicubic: dict[str, dict] = field(default_factory=dict)
    lpips: bool = False
    settings: dict = field(default_factory=dict)
    watch: list[dict] = field(default_factory=list)
    pack: dict | None = None  # eval pack=DIR: {"dir", "images": name -> metrics, "mean", "bicubic": {"mean", name}}

    def to_json(self) -> dict:
        data = asdict(self)
        if self.pack is None:
            del data["pack"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> EvalRecord:
        return cls(
            step=data["step"],
            images={role: _numbers(v) for role, v in data["images"].items()},
            mean=_numbers(data["mean"]),
            bicubic={role: _numbers(v) for role, v in (data.get("bicubic") or {}).items()},
            lpips=data.get("lpips", False),
            settings=data.get("settings", {}),
            watch=data.get("watch", []),
            pack=data.get("pack"),
        )


def read_evals(run_dir: Path) -> list[EvalRecord]:
    return [EvalRecord.from_json(r) for r in read_jsonl(run_dir / "eval.jsonl")]
