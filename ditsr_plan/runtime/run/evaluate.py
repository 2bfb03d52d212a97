"""``ditsr-plan evaluate RUN_OR_CHECKPOINT --pack DIR``: a trained checkpoint scored offline on a pack.

The generator is rebuilt from the run's ``plan.json`` (its pretrained base loaded from the plan's path),
the checkpoint's trained tensors put in -- its EMA by default -- and every pack image super-resolved with
the plan's eval settings (``--steps`` and ``--lq-init`` override them). The result: per-image metrics, their
mean, the bicubic baseline of the pack, and a grid of the worst and the best images by PSNR.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ditsr_plan.compiler.graph import ScheduleGraph

from ..train.device import place
from ..train.generators import load_trained, patch_size
from ..validate.images import EvalImage, pretrained_lpips, save_png
from ..validate.packs import evaluate_pack, load_pack, pack_baseline, ranked
from ..validate.pictures import eval_grid
from ..validate.sampler import sample
from .checkpoint import Checkpoint, newest_complete, verify
from .export import generator_of_run
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
    worst_to_best: list[str] = field(default_factory=list)  # image names by PSNR

    def to_json(self) -> dict:
        return {**asdict(self), "checkpoint": str(self.checkpoint), "grid": self.grid and str(self.grid)}


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
    ckpt: Checkpoint,
    run_dir: Path,
    pack: Path,
    settings: dict,
    ema: bool = True,
    device: str = "auto",
    limit: int | None = None,
    out: Path | None = None,
    progress=lambda line: None,
) -> Evaluation:
    """Score ``ckpt`` (of the run in ``run_dir``; :func:`find_checkpoint` finds both) on ``pack`` with eval
    ``settings`` (steps, lq_init, cfg, seed); write ``out/worst-best.png``, ``out/results.json`` and the SR
    images when ``out`` is given."""
    graph = ScheduleGraph.from_json(json.loads((run_dir / "plan.json").read_text()))
    placement = place(device, "auto")
    latent, model = generator_of_run(graph, placement.device)
    _load(model, ckpt, ema)
    data = graph.blocks["data"].values
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
        worst_to_best=ranked(scored["images"]),
    )
    if out is not None:
        _write(out, result, images, kept)
    return result


def _load(model, ckpt: Checkpoint, ema: bool) -> None:
    misfit = load_trained(model, ckpt.tensors("generator"))
    if misfit:
        raise RunError(f"checkpoint {ckpt.path} does not fit the plan's generator ({misfit}): was the model changed?")
    if ema and (ckpt.path / "ema.safetensors").is_file():
        model.load_state_dict(ckpt.tensors("ema"), strict=False)


def _write(out: Path, result: Evaluation, images, kept: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sr").mkdir(exist_ok=True)
    for name, sr in kept.items():
        save_png(sr, out / "sr" / Path(name).with_suffix(".png").name)
    order = result.worst_to_best
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
