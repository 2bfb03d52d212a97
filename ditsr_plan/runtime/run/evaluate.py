"""``ditsr-plan evaluate RUN_OR_CHECKPOINT --pack DIR``: a trained checkpoint scored offline on a pack.

The generator is rebuilt from the run's ``plan.json`` (its pretrained base loaded from the plan's path),
the checkpoint's trained tensors put in -- its EMA by default -- and every pack image super-resolved with
the plan's eval settings (``--steps`` and ``--lq-init`` override them). The result: per-image metrics, their
mean, the bicubic baseline of the pack, and a grid of the worst and the best images by PSNR.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ditsr_plan.compiler.graph import ScheduleGraph

from ..train.device import place
from ..train.generators import build_generator, patch_size, trainable_state_dict
from ..train.latent import build_latent
from ..validate.images import EvalImage, pretrained_lpips, save_png
from ..validate.packs import evaluate_pack, load_pack, pack_baseline, ranked
from ..validate.pictures import eval_grid
from ..validate.sampler import sample
from .checkpoint import Checkpoint, newest_complete, verify
from .folder import RunError


@dataclass
class Evaluation:
    checkpoint: Path
    step: int
    ema: bool
    pack: str
    settings: dict
    images: dict[str, dict]
    mean: dict
    bicubic: dict
    lpips: bool
    grid: Path | None = None
    order: list[str] = field(default_factory=list)  # worst to best by PSNR

    def to_json(self) -> dict:
        return {
            "checkpoint": str(self.checkpoint),
            "step": self.step,
            "ema": self.ema,
            "pack": self.pack,
            "settings": self.settings,
            "lpips": self.lpips,
            "mean": self.mean,
            "bicubic": self.bicubic,
            "images": self.images,
            "worst_to_best": self.order,
            "grid": None if self.grid is None else str(self.grid),
        }


def find_checkpoint(target: Path) -> tuple[Checkpoint, Path]:
    """(the checkpoint, its run folder) of a run folder (its newest complete checkpoint) or a checkpoint
    folder (``RUN/checkpoints/step-N``)."""
    if (target / "state.json").is_file():
        problem = verify(target)
        if problem:
            raise RunError(f"checkpoint {target} is not usable: {problem}")
        return Checkpoint(target, int(target.name.rpartition("-")[2])), target.parent.parent
    if not (target / "plan.json").is_file():
        raise RunError(f"{target} is neither a run folder (no plan.json) nor a checkpoint (no state.json)")
    ckpt = newest_complete(target / "checkpoints", report=lambda line: None)
    if ckpt is None:
        raise RunError(f"{target} has no complete checkpoint in checkpoints/")
    return ckpt, target


def evaluate_checkpoint(
    target: Path,
    pack: Path,
    settings: dict,
    ema: bool = True,
    device: str = "auto",
    limit: int | None = None,
    out: Path | None = None,
    progress=lambda line: None,
) -> Evaluation:
    """Score ``target`` (a run or checkpoint folder) on ``pack`` with eval ``settings`` (steps, lq_init, cfg,
    seed); write ``out/worst-best.png``, ``out/results.json`` and the SR images when ``out`` is given."""
    ckpt, run_dir = find_checkpoint(target)
    graph = ScheduleGraph.from_json(json.loads((run_dir / "plan.json").read_text()))
    placement = place(device, "auto")
    latent = build_latent(graph.blocks["latent"].kind, dict(graph.blocks["latent"].values)).to(placement.device)
    data = graph.blocks["data"].values
    model = build_generator(
        graph.blocks["model"], latent, data["crop"] // latent.factor, data["crop"], placement.device
    )
    model = model.to(placement.device)
    _load(model, ckpt, ema)
    scale = data["scale"]
    images = load_pack(pack, scale, latent.factor * patch_size(model) * scale, limit)
    lpips_fn = pretrained_lpips(placement.device) if settings.get("lpips", "auto") == "auto" else None
    diffusion = graph.blocks["diffusion"].values
    kept = {}
    done = [0]

    def sample_fn(lr_up):
        sr = sample(model, latent, diffusion, lr_up, settings, placement)
        done[0] += 1
        progress(f"evaluate: {done[0]}/{len(images)}")
        return sr

    scored = evaluate_pack(images, sample_fn, scale, lpips_fn, keep=lambda name, sr: kept.__setitem__(name, sr))
    result = Evaluation(
        ckpt.path,
        ckpt.step,
        ema and (ckpt.path / "ema.safetensors").is_file(),
        str(pack),
        dict(settings),
        scored["images"],
        scored["mean"],
        pack_baseline(images, scale, lpips_fn),
        lpips_fn is not None,
        order=ranked(scored["images"]),
    )
    if out is not None:
        _write(out, result, images, kept)
    return result


def _load(model, ckpt: Checkpoint, ema: bool) -> None:
    tensors = ckpt.tensors("generator")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    trained = set(trainable_state_dict(model))
    if unexpected or trained & set(missing):
        raise RunError(
            f"checkpoint {ckpt.path} does not fit the plan's generator (missing {sorted(trained & set(missing))[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}): was the plan's model changed?"
        )
    if ema and (ckpt.path / "ema.safetensors").is_file():
        model.load_state_dict(ckpt.tensors("ema"), strict=False)


def _write(out: Path, result: Evaluation, images, kept: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sr").mkdir(exist_ok=True)
    for name, sr in kept.items():
        save_png(sr, out / "sr" / Path(name).with_suffix(".png").name)
    order = result.order
    shown = order[:3] + [n for n in order[-3:] if n not in order[:3]]
    by_name = {im.name: im for im in images}
    rows = [(EvalImage(n, by_name[n].gt, by_name[n].lr_up), kept[n]) for n in shown]
    grid = out / "worst-best.png"
    eval_grid(
        rows,
        result.images,
        result.bicubic,
        result.step,
        grid,
        title=f"{Path(result.pack).name}: the {min(3, len(order))} worst and best by PSNR (step {result.step})",
    )
    result.grid = grid
    (out / "results.json").write_text(json.dumps(result.to_json(), indent=1) + "\n")
