"""The lines of a run folder's ``metrics.jsonl`` and ``eval.jsonl``: one typed record each, written and read
through these classes (the run writes them; validation, the report and ``compare`` read them). Imports no
torch: the analysis room reads run folders with it.

JSON has no NaN or infinity: non-finite numbers are written as the strings ``"nan"``, ``"inf"`` and
``"-inf"`` (every line stays valid JSON) and read back as numbers. A line cut short by a kill is skipped.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, overload

SPECIAL: dict[str, Any] = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def json_safe(x: Any) -> Any:
    """NaN and infinities as the strings "nan", "inf", "-inf", everywhere in ``x``."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def strict_json(data: Any, indent: int | None = 1) -> str:
    """``data`` as strict JSON text (what ``json.loads(..., parse_constant=reject)`` reads): NaN and
    infinities as "nan", "inf", "-inf" (:func:`json_safe`), never bare ``NaN``/``Infinity``."""
    return json.dumps(json_safe(data), indent=indent, allow_nan=False)


@overload
def _numbers(values: dict) -> dict: ...
@overload
def _numbers(values: None) -> None: ...
@overload
def _numbers(values: dict | None) -> dict | None: ...
def _numbers(values: dict | None) -> dict | None:
    """A dict of metric values with the special strings read back as numbers."""
    if values is None:
        return None
    return {k: SPECIAL.get(v, v) if isinstance(v, str) else v for k, v in values.items()}


def _pack_numbers(pack: dict | None) -> dict | None:
    """An eval record's pack part with the special strings of its metrics read back as numbers."""
    if not pack:
        return pack

    def rows(part: dict | None) -> dict:
        return {k: _numbers(v) if isinstance(v, dict) else v for k, v in (part or {}).items()}

    mean = _numbers(pack.get("mean"))
    return {**pack, "mean": mean, "images": rows(pack.get("images")), "bicubic": rows(pack.get("bicubic"))}


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
    partial = path.with_name(path.name + ".tmp")  # replaced in one rename: a Ctrl-C never leaves it half written
    partial.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(partial, path)


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


def _typed(records: list, cls) -> list:
    """``cls.from_json`` of each record; a record that is not one (a line damaged into other valid JSON) is
    skipped like a line cut short."""
    out = []
    for record in records:
        try:
            out.append(cls.from_json(record))
        except (KeyError, TypeError, AttributeError, ValueError):
            continue
    return out


def read_metrics(run_dir: Path) -> list[MetricsRecord]:
    return _typed(read_jsonl(run_dir / "metrics.jsonl"), MetricsRecord)


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
    pack: dict | None = None  # eval pack=DIR: {"dir", "input", "images": name -> metrics, "mean", "bicubic": {...}}
    flags: list[dict] = field(default_factory=list)  # e.g. "eval_not_finite": an SR with NaN, its metrics "nan"

    def to_json(self) -> dict:
        data = asdict(self)
        if self.pack is None:
            del data["pack"]
        if not self.flags:
            del data["flags"]
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
            pack=_pack_numbers(data.get("pack")),
            flags=data.get("flags") or [],
        )


def read_evals(run_dir: Path) -> list[EvalRecord]:
    return _typed(read_jsonl(run_dir / "eval.jsonl"), EvalRecord)


# ---- eval records as text ------------------------------------------------------------------------


def _beside_bicubic(mean: dict, base: dict) -> str:
    parts = []
    for key, value in mean.items():
        if value is None or key == "perfect":
            continue
        digits = 2 if key.startswith("psnr") else 3
        text = f"{key} {value:.{digits}f}"
        if base.get(key) is not None:
            text += f" (bicubic {base[key]:.{digits}f})"
        parts.append(text)
    return ", ".join(parts)


def eval_metric_columns(mean: dict) -> list[str]:
    """The metric columns of a table of eval results: those with a value, in the record's order."""
    return [k for k, v in mean.items() if k != "perfect" and v is not None]


def eval_summary(record: EvalRecord) -> str:
    """``psnr 31.20 (bicubic 39.10), ssim ...``: an eval's mean metrics beside the bicubic baseline's (and
    the pack's, ``pack (50 images): psnr ...``, when the eval has one)."""
    text = _beside_bicubic(record.mean, record.bicubic.get("mean", {}))
    if record.pack:
        pack = record.pack
        shown = _beside_bicubic(pack["mean"], pack["bicubic"]["mean"])
        text += f"; pack ({len(pack['images'])} images): {shown}"
    return text
