"""The lines a run prints before its first step: what it trains, on what, where it writes."""

from __future__ import annotations

from pathlib import Path

import torch

from ditsr_plan import __version__
from ditsr_plan.compiler.graph import ScheduleGraph
from ditsr_plan.settings.numbers import format_steps

from .invocation import Invocation
from .watch_keep import rule_text, scaled_rules_note


def header(graph: ScheduleGraph, trainer, run_dir: Path, start: int, evaluator, invocation: Invocation) -> str:
    p, data, blocks = trainer.placement, trainer.data, graph.blocks
    scale = f" (time scale {graph.time_scale:g})" if graph.time_scale != 1 else ""
    compiled = f", torch.compile {graph.block('run').compile_backend}" if trainer.compiled else ""
    files = "images" if blocks["data"].kind == "builtin" else "image files"
    lines = [
        f"ditsr-plan {__version__} · plan {graph.name} · hash {graph.hash} · {format_steps(graph.total_steps)} steps"
        + scale
        + (f" · --set {' '.join(invocation.overrides)}" if invocation.overrides else ""),
        f"device {p.device} ({p.precision}, {torch.get_num_threads()} CPU threads{compiled}) · data "
        f"{blocks['data'].kind} ({len(data)} {files}, crop {data.crop}, batch {data.batch_size} x accum "
        f"{trainer.accum}) · latent {blocks['latent'].kind} (x{trainer.latent.factor}, {trainer.latent.channels} "
        f"ch) · pixel patch {trainer.patch.size} px (margin {trainer.patch.margin})",
    ]
    if data.stats.skipped:
        lines.append(f"data: {len(data.stats.skipped)} unreadable image(s) skipped so far")
    if trainer.ranks.enabled:
        r = trainer.ranks
        lines.append(
            f"DDP: {r.world} processes ({r.backend}); global batch {data.batch_size * r.world * trainer.accum} "
            f"= {data.batch_size} per rank x {r.world} ranks x accum {trainer.accum}; rank 0 logs and checkpoints"
        )
    lines.append(generator_line(trainer))
    from ..train.generators.census import count, groups_line

    lines.append("  " + groups_line(count(trainer.model, graph.blocks.get("ema") is not None)))
    lines.append("parameters: " + ", ".join(f"{k} {v}" for k, v in trainer.parameter_counts().items()))
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
        ev = graph.block("eval")
        assert ev is not None  # an evaluator runs the plan's eval block
        lines.append(
            f"eval every {format_steps(ev.every)} steps on {', '.join(i.role for i in evaluator.images)} "
            f"(DDIM {ev.steps} step{'s' if ev.steps != 1 else ''}, EMA weights); {evaluator.lpips_note()}"
        )
        if evaluator.pack:
            pack_mean = evaluator.pack_bicubic["mean"]
            lines.append(
                f"  and on the pack {ev.pack} ({len(evaluator.pack)} images; bicubic psnr "
                f"{pack_mean['psnr']:.2f}, ssim {pack_mean['ssim']:.3f}): keep/watch as pack.psnr, pack.lpips, ..."
            )
    scaled = scaled_rules_note(graph.watches, graph.keep, graph.time_scale)
    if scaled:
        lines.append(scaled)
    elif graph.watches:  # the guards the run checks at every eval, where they are written
        lines += [f"{rule_text(w)}" + (f" ({w.origin})" if w.origin else "") for w in graph.watches]
    lines.append(
        f"writing to {run_dir}/ (metrics.jsonl, {'eval.jsonl, eval/, ' if evaluator else ''}checkpoints/, final/)"
    )
    if start:
        lines.append(f"resuming after step {start} (checkpoint step-{start:08d})")
    return "\n".join(lines)


def generator_line(trainer) -> str:
    """What generator trains: kind, source, what trains of it (LoRA rank and targets)."""
    from ..train.generators import describe

    info = describe(trainer.model)
    parts = [f"generator {info['kind']}: {info.get('source', '')}".rstrip(": ")]
    if info.get("train"):
        parts.append(f"train={info['train']}, cond={info.get('cond')}")
    if info.get("lora"):
        parts.append(f"LoRA {info['lora']}")
    line = " · ".join(parts)
    if info["kind"] == "dit" and "from scratch" in info.get("source", "") and info["parameters"] < 5e6:
        line += (
            "\nnote: this trains the built-in tiny DiT from scratch (the default model): for the reference's "
            "pretrained PixArt-XL/2 + LoRA see plans/reference/pixart_v10.plan"
        )
    return line
