"""``ditsr-plan export RUN --merge OUT``: a trained run's generator as one diffusers transformer folder.

The base transformer (from the plan's ``model ... path=``) with the run's trained weights -- its EMA by
default -- the LoRA merged into the base weights, and the ``concat`` conditioning in its widened input
layer: ``PixArtTransformer2DModel.from_pretrained(OUT)`` (or DiT's) loads it, and called on
``cat([noisy, LR latent])`` (with the caption the run used) it gives the trained generator's prediction at
augmentation level 0 (validation). With ``cond=adapter``, the adapter is not a diffusers module: its
weights are written beside it (``sr_adapter.safetensors``) and ``sr_export.json`` says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from ditsr_plan.compiler.graph import ScheduleGraph

from ..train.device import place
from ..train.generators import build_generator
from ..train.generators.lora import load_lora
from ..train.latent import build_latent
from .folder import RunError


def generator_of_run(graph: ScheduleGraph, device):
    """(latent, generator) of a run's plan, freshly built on ``device`` (its pretrained base loaded from the
    plan's path; the trained weights still to be put in)."""
    latent = build_latent(graph.blocks["latent"].kind, dict(graph.blocks["latent"].values)).to(device)
    crop = graph.blocks["data"].values["crop"]
    return latent, build_generator(graph.blocks["model"], latent, crop // latent.factor, crop, device).to(device)


def rebuild_generator(run_dir: Path, ema: bool = True, device: str = "cpu"):
    """The run's generator with its final trained weights (``final/generator_ema`` or ``final/generator``)."""
    from safetensors.torch import load_file

    if not (run_dir / "plan.json").is_file():
        raise RunError(f"{run_dir} is not a run folder (no plan.json)")
    graph = ScheduleGraph.from_json(json.loads((run_dir / "plan.json").read_text()))
    final = run_dir / "final" / ("generator_ema" if ema else "generator")
    if not final.is_dir():
        raise RunError(f"{run_dir} has no {final.relative_to(run_dir)}: only a finished run can be exported")
    _, model = generator_of_run(graph, place(device, "fp32").device)
    if not hasattr(model, "merged"):
        raise RunError(f"model {graph.blocks['model'].kind} from scratch: final/ already holds a diffusers folder")
    if (final / "adapter_model.safetensors").is_file():
        load_lora(model.base, final)
    else:
        model.base.load_state_dict(
            type(model.base).from_pretrained(str(final / "transformer")).state_dict(), strict=False
        )
    model.load_state_dict(load_file(str(final / "sr_conditioning.safetensors")), strict=False)
    return model, graph


def export_merged(run_dir: Path, out: Path, ema: bool = True) -> Path:
    from safetensors.torch import save_file

    model, _ = rebuild_generator(run_dir, ema)
    merged = model.merged()
    merged.save_pretrained(out, safe_serialization=True)
    note = {
        "from": str(run_dir),
        "ema": ema,
        "cond": model.settings["cond"],
        "input": "cat([noisy, LR latent])" if model.concat else "noisy",
    }
    if model.adapter is not None:
        save_file(
            {k: v.contiguous() for k, v in model.adapter.state_dict().items()}, str(out / "sr_adapter.safetensors")
        )
        note["adapter"] = "sr_adapter.safetensors (LRAdapter of ditsr_plan.runtime.train.generators.conditioning)"
    (out / "sr_export.json").write_text(json.dumps(note, indent=1))
    return out
