"""What a plan's generator trains, counted before any weight is read (``ditsr-plan show PLAN --params``; the
run header prints the same groups): the generator is built from the model folder's ``config.json`` alone on
the meta device, its parameters counted per group, trained and frozen, with a memory estimate.

Groups are found from the names, so whatever a generator builds is counted: ``LoRA`` (every ``lora_``
matrix), the pretrained transformer's parameters by module kind (``base attention``, ``base MLP``,
``base adaLN``, ``base embedders``, ``base norms``, ``base output``, else ``base other``), the ``input layer``
(the patch embedding, widened for ``cond=concat``), and each other part of the generator under its own name
(``adapter``, ``aug_level``, ...).

Memory (CUDA, before activations): trained weights in fp32, frozen ones in bf16 (as the pretrained generator
places them on CUDA; all fp32 when nothing is frozen), fp32 gradients of the trained ones, AdamW's two fp32
moments, and the EMA's fp32 shadow of every trained parameter when the plan has an ``ema`` block.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from ditsr_plan.compiler.graph import ScheduleGraph
from ditsr_plan.settings.schemas import CustomModel, DitModel, PixartModel, VaeLatent

from ..loading import LoadError

BASE_KINDS = (
    ("attention", (".attn1.", ".attn2.", ".attn.")),
    ("MLP", (".ff.",)),
    ("adaLN", ("scale_shift_table", "adaln_single.linear")),
    ("embedders", ("pos_embed.", "adaln_single.emb", "caption_projection.", "norm1.emb.")),
    ("output", ("proj_out",)),
    ("norms", ("norm",)),
)
INPUT_LAYER = ("base.pos_embed.proj.",)


def group_of(name: str) -> str:
    """The group a parameter is counted in, from its name."""
    if "lora_" in name:
        return "LoRA"
    if name.startswith(INPUT_LAYER):
        return "input layer"
    if name.startswith("base."):
        inner = name[4:]
        return next((f"base {kind}" for kind, marks in BASE_KINDS if any(m in inner for m in marks)), "base other")
    return name.split(".")[0]


def count(model: nn.Module, ema: bool) -> dict:
    """Trained and frozen totals, per group, and the memory estimate of ``model`` as it is built."""
    groups: dict[str, dict[str, int]] = {}
    for name, param in model.named_parameters():
        row = groups.setdefault(group_of(name), {"trained": 0, "frozen": 0})
        row["trained" if param.requires_grad else "frozen"] += param.numel()
    trained = sum(g["trained"] for g in groups.values())
    frozen = sum(g["frozen"] for g in groups.values())
    fp32, bf16 = 4, 2
    memory = {
        "weights": trained * fp32 + frozen * (bf16 if frozen else fp32),
        "gradients": trained * fp32,
        "optimizer": 2 * trained * fp32,
        "ema": trained * fp32 if ema else 0,
    }
    memory["total"] = sum(memory.values())
    return {
        "trained": trained,
        "frozen": frozen,
        "ema_shadow": trained if ema else 0,
        "groups": dict(sorted(groups.items(), key=lambda kv: -(kv[1]["trained"] + kv[1]["frozen"]))),
        "memory": memory,
    }


def lr_split(model: nn.Module) -> dict[str, int]:
    """Trained parameters per learning-rate multiplier (``"x1"``, ``"x10"``)."""
    from . import parameter_groups

    split: dict[str, int] = {}
    for group in parameter_groups(model):
        key = f"x{group['lr_scale']:g}"
        split[key] = split.get(key, 0) + sum(p.numel() for p in group["params"])
    return split


def _latent(graph: ScheduleGraph, model_channels: int | None) -> SimpleNamespace:
    """The latent's channels and factor without loading it: a VAE's from its config.json when readable
    (else an SD-VAE's: the pretrained model's input channels, x8)."""
    settings = graph.block("latent")
    if not isinstance(settings, VaeLatent):
        return SimpleNamespace(channels=3 * settings.factor**2, factor=settings.factor)
    config = _small_json(Path(settings.path).expanduser() / (settings.subfolder or "") / "config.json")
    try:
        channels, levels = int(config["latent_channels"]), len(config["block_out_channels"])
    except (KeyError, TypeError, ValueError):
        return SimpleNamespace(channels=model_channels or 4, factor=8)
    if not (1 <= channels <= 64 and 1 <= levels <= 8):
        raise LoadError(f"latent vae path={settings.path}: config.json describes no real VAE (is it the right file?)")
    return SimpleNamespace(channels=channels, factor=2 ** (levels - 1))


def _small_json(path: Path) -> dict:
    """A config.json as a dict; {} when it is missing, too large for a config (1 MiB), or not a JSON object."""
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_channels(settings: DitModel | PixartModel) -> int | None:
    value = _small_json(Path(str(settings.path)).expanduser() / (settings.subfolder or "") / "config.json").get(
        "in_channels"
    )
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 64 else None


def build_on_meta(graph: ScheduleGraph) -> nn.Module:
    """The plan's generator with the shapes and names a run would build, on the meta device."""
    settings = graph.block("model")
    if isinstance(settings, CustomModel):
        raise LoadError("show --params: a custom generator is counted by 'ditsr-plan run' (its header), not here")
    crop = graph.block("data").crop
    pretrained = settings.path is not None
    latent = _latent(graph, _model_channels(settings) if pretrained else None)
    origins = graph.blocks["model"].value_origins
    if pretrained:
        from .pretrained import SRTransformer

        kind = "pixart" if isinstance(settings, PixartModel) else "dit"
        return SRTransformer(kind, settings, latent.channels, crop // latent.factor, crop, "meta", origins, False)
    from .dit import SRDiT

    assert isinstance(settings, DitModel)  # a PixArt always has a path
    with torch.device("meta"):
        return SRDiT(latent.channels, crop // latent.factor, settings)


def census(graph: ScheduleGraph) -> dict:
    """What ``show --params`` reports of ``graph``'s plan."""
    model = build_on_meta(graph)
    from . import describe

    info = describe(model)
    result = {
        "plan": graph.name,
        "generator": info["kind"],
        "source": info.get("source"),
        "train": info.get("train"),
        **count(model, graph.blocks.get("ema") is not None),
        "lr_multipliers": lr_split(model),
    }
    return result


def millions(n: int) -> str:
    """A parameter count in millions (in thousands below 100k, where millions would show 0.00M)."""
    return f"{n / 1e6:.2f}M" if n >= 100_000 or n == 0 else f"{n / 1e3:.1f}k"


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def groups_line(counts: dict) -> str:
    """The groups in one line (the run header's)."""
    parts = []
    for name, row in counts["groups"].items():
        frozen = f" (+{millions(row['frozen'])} frozen)" if row["frozen"] and row["trained"] else ""
        parts.append(f"{name} {millions(row['trained'])}{frozen}" if row["trained"] else f"{name} frozen")
    return "trains: " + ", ".join(parts)


def census_text(result: dict) -> str:
    """``show --params`` for people: a table of groups, the totals, the memory estimate."""
    rows = [("group", "trained", "frozen")]
    rows += [(n, millions(r["trained"]), millions(r["frozen"])) for n, r in result["groups"].items()]
    rows.append(("total", millions(result["trained"]), millions(result["frozen"])))
    if result["ema_shadow"]:
        rows.append(("EMA shadow", millions(result["ema_shadow"]), "-"))
    width = max(len(r[0]) for r in rows)
    lines = [
        f"plan {result['plan']}: generator {result['generator']} ({result['source'] or 'from scratch'}), "
        f"train={result['train'] or 'all'} -- built from its config alone (meta device, no weight read)"
    ]
    lines += [f"  {a:<{width}}  {b:>9}  {c:>9}" for a, b, c in rows]
    lr = ", ".join(f"{millions(n)} at lr {k}" for k, n in result["lr_multipliers"].items())
    lines.append(f"learning rates: {lr}")
    m = result["memory"]
    lines.append(
        f"memory on CUDA before activations: {gib(m['total'])} = weights {gib(m['weights'])} (trained fp32, "
        f"frozen bf16) + gradients {gib(m['gradients'])} + AdamW {gib(m['optimizer'])} + EMA {gib(m['ema'])}"
    )
    return "\n".join(lines)
