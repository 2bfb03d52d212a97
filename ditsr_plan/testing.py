"""Small things for tests and benchmarks, made here rather than downloaded: a plan with every term kind on
the tiny model, a CPU trainer of a plan, and a randomly initialised ``AutoencoderKL`` saved with
``save_pretrained`` (what ``latent vae path=...`` loads). The test suite's fixtures and ``bench/`` use these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .stand_ins import make_dit, make_pixart, make_vae, write_photos

__all__ = [
    "ALL_TERMS",
    "finished_run_and_pack",
    "folder_bytes",
    "make_dit",
    "make_pixart",
    "make_vae",
    "pretrained_plan",
    "strict_loads",
    "tiny_plan",
    "tiny_trainer",
    "trainer_for",
    "write_photos",
]

ALL_TERMS = """\
loss v         vpred     min_snr=5
loss latent_l1 latent_l1
loss lpips     lpips     net=vgg backbone=random
loss edge      edge
loss flat      flat
loss ffl       ffl       mask=edge
loss gan       patchgan  layers=2 ndf=8 r1=10 r1_every=2 d_warmup=2
"""

SETTINGS = """\
model  dit preset=tiny
latent pixel_unshuffle factor=4
data   builtin crop=32 batch=2 scenes=2
pixel  patch=16 margin=4
ema    decay=0.9
run    seed=7 checkpoint_every={ckpt} keep=5
log    {log}
"""


def tiny_plan(
    folder: Path,
    steps: int = 12,
    stages: str | None = None,
    ckpt: int = 6,
    extra: str = "",
    terms: str = ALL_TERMS,
    log: str = "every=1 tensorboard=off",
) -> Path:
    """``folder/tiny.plan``: every term kind on the tiny model; stage A (reconstruction only), then B with
    everything live."""
    half = steps // 2
    stages = stages or (
        f"stage A 0..{half}: v 1; latent_l1 1\nstage B {half}..: lpips 0.3; edge 0.05; flat 0.08; ffl 0.01; gan 0.03\n"
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.plan"
    path.write_text(f"plan tiny\nsteps {steps}\n" + terms + SETTINGS.format(ckpt=ckpt, log=log) + extra + stages)
    return path


def trainer_for(plan: Path, overrides=(), device: str = "cpu"):
    """A trainer of the plan at ``plan``: on CPU in fp32, elsewhere in the plan's ``run precision``."""
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.train.device import place
    from ditsr_plan.runtime.train.trainer import Trainer

    graph = compile_plan(plan, overrides=overrides)
    return Trainer(graph, place(device, "fp32" if device == "cpu" else graph.block("run").precision))


def tiny_trainer(folder: Path, **kwargs):
    return trainer_for(tiny_plan(folder, **kwargs))


def save_original_pixart(folder: Path, out: Path, caption_tokens: int = 3, seed: int = 0) -> Path:
    """The diffusers PixArt at ``folder`` written as an original PixArt-alpha checkpoint (``out``, a .pth of
    ``{"state_dict": ...}`` in PixArt's own names, with a random learned null caption ``y_embedding`` of
    ``caption_tokens`` tokens): what ``model pixart path=FILE.pth`` reads. Written name by name here, apart
    from the runtime's conversion, so that the test of one is not the other."""
    import torch
    from diffusers import PixArtTransformer2DModel

    model: Any = PixArtTransformer2DModel.from_pretrained(folder)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    orig = {"pos_embed": model.pos_embed.pos_embed.detach().clone()}
    names = {
        "pos_embed.proj": "x_embedder.proj",
        "adaln_single.emb.timestep_embedder.linear_1": "t_embedder.mlp.0",
        "adaln_single.emb.timestep_embedder.linear_2": "t_embedder.mlp.2",
        "adaln_single.linear": "t_block.1",
        "caption_projection.linear_1": "y_embedder.y_proj.fc1",
        "caption_projection.linear_2": "y_embedder.y_proj.fc2",
        "proj_out": "final_layer.linear",
    }
    for ours, theirs in names.items():
        for leaf in ("weight", "bias"):
            orig[f"{theirs}.{leaf}"] = sd[f"{ours}.{leaf}"]
    orig["final_layer.scale_shift_table"] = sd["scale_shift_table"]
    for i in range(len(model.transformer_blocks)):
        b, o = f"transformer_blocks.{i}.", f"blocks.{i}."
        orig[o + "scale_shift_table"] = sd[b + "scale_shift_table"]
        for leaf in ("weight", "bias"):
            orig[f"{o}attn.qkv.{leaf}"] = torch.cat([sd[f"{b}attn1.to_{x}.{leaf}"] for x in "qkv"])
            orig[f"{o}attn.proj.{leaf}"] = sd[f"{b}attn1.to_out.0.{leaf}"]
            orig[f"{o}cross_attn.q_linear.{leaf}"] = sd[f"{b}attn2.to_q.{leaf}"]
            orig[f"{o}cross_attn.kv_linear.{leaf}"] = torch.cat([sd[f"{b}attn2.to_{x}.{leaf}"] for x in "kv"])
            orig[f"{o}cross_attn.proj.{leaf}"] = sd[f"{b}attn2.to_out.0.{leaf}"]
            orig[f"{o}mlp.fc1.{leaf}"] = sd[f"{b}ff.net.0.proj.{leaf}"]
            orig[f"{o}mlp.fc2.{leaf}"] = sd[f"{b}ff.net.2.{leaf}"]
    g = torch.Generator().manual_seed(seed)
    orig["y_embedder.y_embedding"] = torch.randn(caption_tokens, model.config.caption_channels, generator=g)
    torch.save({"state_dict": orig}, out)
    return out


def pretrained_plan(folder: Path, model_line: str, steps: int = 4, ckpt: int = 2, extra: str = "") -> Path:
    """``folder/pretrained.plan``: the tiny VAE latent (made in ``folder``), a model line of your own, every term
    kind (stage A reconstruction only, then everything live), EMA, one CPU thread (runs compared bit for bit)."""
    vae = make_vae(folder)
    half = steps // 2
    path = folder / "pretrained.plan"
    path.write_text(
        f"plan pretrained\nsteps {steps}\n{ALL_TERMS}{model_line}\nlatent vae path={vae}\n"
        "data   builtin crop=32 batch=2 scenes=2\npixel  patch=16 margin=0\nema    decay=0.9\n"
        f"run    seed=7 threads=1 checkpoint_every={ckpt} keep=5\nlog    every=1 tensorboard=off\n{extra}"
        f"stage A 0..{half}: v 1; latent_l1 1\n"
        f"stage B {half}..: lpips 0.3; edge 0.05; flat 0.08; ffl 0.01; gan 0.03\n"
    )
    return path


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path: what a test compares to say "nothing was touched"."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def strict_loads(text: str) -> Any:
    """``json.loads`` that refuses bare ``NaN``/``Infinity``: what the tool's strict JSON files must pass."""
    import json

    def reject(constant: str) -> None:
        raise ValueError(f"bare {constant} in JSON")

    return json.loads(text, parse_constant=reject)


def finished_run_and_pack(root: Path, run_name: str, overrides: tuple[str, ...] = ()) -> Path:
    """Under ``root``: ``pack/``, a 2-image pack of scikit-image photos, and ``run_name/``, a finished 4-step
    run of the tiny model (v term only, checkpoints at 2 and 4, EMA; ``overrides`` as ``--set``). Returns the
    plan."""
    import skimage.data
    from PIL import Image

    from ditsr_plan.cli import main
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.run import run_plan

    (root / "hr").mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).save(root / "hr" / f"{name}.png")
    assert main(["pack", "make", str(root / "hr"), str(root / "pack"), "--n", "2", "--size", "32", "-q"]) == 0
    plan = tiny_plan(root / "p", steps=4, ckpt=2, terms="loss v vpred\n", stages="stage A 0..: v 1\n")
    run_plan(compile_plan(plan, overrides=overrides), root / run_name, quiet=True)
    return plan


# PixArt-XL-2-512x512's transformer/config.json (diffusers' PixArtTransformer2DModel): what `show --params`
# needs to count the reference's model without its 2.4 GB of weights
PIXART_XL_512 = {
    "_class_name": "PixArtTransformer2DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "attention_type": "default",
    "caption_channels": 4096,
    "cross_attention_dim": 1152,
    "dropout": 0.0,
    "in_channels": 4,
    "interpolation_scale": None,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "norm_type": "ada_norm_single",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 64,
    "upcast_attention": False,
    "use_additional_conditions": None,
}


def pixart_xl_config(folder: Path, **changes: Any) -> Path:
    """``folder/transformer/config.json`` of PixArt-XL-2-512x512 (``changes`` override keys), no weights."""
    import json

    inner = folder / "transformer"
    inner.mkdir(parents=True, exist_ok=True)
    (inner / "config.json").write_text(json.dumps({**PIXART_XL_512, **changes}, indent=1))
    return folder
