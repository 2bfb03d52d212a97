"""A reference-shaped configuration for the runtime benchmarks, at a size a CPU can run.

Reference: a VAE latent, the pixel patch decoded through the VAE, LPIPS (VGG), edge/flat, FFL and a
PatchGAN. On CPU the VAE is a small randomly initialised AutoencoderKL saved to a temporary folder
(nothing to download) and the sizes are reduced; on CUDA the sizes grow (see each benchmark's --size).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.train.device import place
from ditsr_plan.runtime.train.trainer import Trainer
from ditsr_plan.testing import make_pixart, make_vae

PLAN = """plan bench
steps 30k
loss v         vpred     min_snr=5
loss latent_l1 latent_l1
loss lpips     lpips     net=vgg backbone=random
loss edge      edge
loss flat      flat
loss ffl       ffl       mask=edge
loss gan       patchgan
ema    decay=0.999
model  dit preset={preset}
latent vae path={vae}
data   builtin crop={crop} batch={batch} scenes=2
pixel  patch={patch} margin={margin}
run    seed=0
stage A 0..10k:  v 1; latent_l1 1
stage B 10k..20k: lpips 0.3; edge 0.06; flat 0.08
stage C 20k..:   lpips 0.4; edge 0.06; flat 0.1; ffl 0.005; gan 0.03
"""

SIZES = {
    # name: (DiT preset, HR crop, batch, pixel patch, margin, VAE widths)
    "cpu": ("tiny", 128, 1, 64, 16, (32, 64, 64, 64)),
    "gpu": ("b", 256, 4, 256, 0, (128, 256, 512, 512)),
}


def build(size: str, device: str = "auto") -> Trainer:
    preset, crop, batch, patch, margin, widths = SIZES[size]
    folder = Path(tempfile.mkdtemp(prefix="ditsr-bench-"))
    vae = make_vae(folder, widths, layers_per_block=2)
    plan = folder / "bench.plan"
    plan.write_text(PLAN.format(preset=preset, vae=vae, crop=crop, batch=batch, patch=patch, margin=margin))
    graph = compile_plan(plan)
    return Trainer(graph, place(device, "auto"))


PIXART_PLAN = """plan bench_pixart
steps 15k
loss v         vpred     min_snr=5
loss latent_l1 latent_l1
loss lpips     lpips     net=vgg backbone=random
loss edge      edge      q=0.90 pow=0.5
loss flat      flat      q=0.90 pow=0.5
loss gan       patchgan  layers=3 loss=hinge r1=10 r1_every=16 lr=1e-4
ema    decay=0.999
model  pixart path={model} lora=16 lora_alpha=16 cond=concat+adapter checkpointing={checkpointing} {train}
latent vae path={vae}
data   builtin crop={crop} batch={batch} scenes=2
pixel  patch={patch} margin={margin}
optim  lr=1e-5 weight_decay=0.01
run    seed=0 precision={precision}
stage A 0..3k:  v 1; latent_l1 1
stage B 3k..9k: lpips 0->0.35 linear; edge 0->0.06 linear; flat 0->0.08 linear
stage C 9k..:   gan 0->0.03 linear over 4k; lpips 0.35->0.45 linear over 4k; flat 0.08->0.10 linear over 4k
"""
PIXART_STAGES = {"A": (100, 3_000), "B": (5_000, 6_000), "C": (12_001, 6_000)}  # a step inside, steps in v10

# what trains (--train): lora, the LoRA-only variant (plans/reference/pixart_v10_lora.plan); scripts, the
# reference scripts' set (plans/reference/pixart_v10.plan: LoRA + every other transformer parameter + their
# feature-pyramid adapter and its injection, ~489M at PixArt-XL/2 shape)
PIXART_TRAIN = {
    "lora": "cond_lr=10",
    "scripts": "train=lora+rest cond_lr=10 cond_lr_on=adapter.*,pos_embed.proj.* adapter=pyramid "
    "lora_targets=to_q,to_k,to_v,to_out.0,caption_projection.linear_1,caption_projection.linear_2,res_proj",
}

PIXART_SIZES = {
    # name: (transformer config, HR crop, batch, pixel patch, margin, VAE widths, precision)
    # PixArt-alpha XL/2 at 512 px: 28 blocks, 16 heads x 72 = 1152 wide, T5 captions of 4096 channels, SD-VAE
    "pixart-xl": (
        {
            "num_layers": 28,
            "num_attention_heads": 16,
            "attention_head_dim": 72,
            "cross_attention_dim": 1152,
            "caption_channels": 4096,
            "sample_size": 64,
        },
        512,
        4,
        256,
        32,
        (128, 256, 512, 512),
        "bf16",
    ),
    # the same code path at a size a CPU runs in seconds (a check of the benchmark, not a figure)
    "pixart-cpu": ({}, 128, 1, 64, 16, (32, 64, 64, 64), "fp32"),
}


def build_pixart(
    size: str,
    checkpointing: bool,
    folder: Path | None = None,
    device: str = "auto",
    train: str = "lora",
    batch: int | None = None,
) -> Trainer:
    """A trainer of the v10 schedule on a randomly initialised PixArt of the size's shape (built once per
    folder: the second call reuses the saved model and VAE); ``train``: a key of PIXART_TRAIN; ``batch``: the
    micro-batch (default the size's)."""
    config, crop, default_batch, patch, margin, widths, precision = PIXART_SIZES[size]
    batch = batch or default_batch
    folder = folder or Path(tempfile.mkdtemp(prefix="ditsr-bench-"))
    model, vae = folder / "pixart", folder / "vae"
    if not model.exists():
        make_pixart(folder, **config)
    if not vae.exists():
        make_vae(folder, widths, layers_per_block=2)
    plan = folder / "bench.plan"
    plan.write_text(
        PIXART_PLAN.format(
            model=model,
            vae=vae,
            crop=crop,
            batch=batch,
            patch=patch,
            margin=margin,
            checkpointing=str(checkpointing).lower(),
            precision=precision,
            train=PIXART_TRAIN[train],
        )
    )
    return Trainer(compile_plan(plan), place(device, precision))


def sync(trainer: Trainer) -> None:
    if trainer.placement.device.type == "cuda":
        torch.cuda.synchronize()


def alternate(trainer: Trainer, variants: dict, steps: int, warmup: int = 2) -> dict[str, float]:
    """Run the variants (name -> callable) in turn, ``warmup + steps`` rounds; median seconds of each."""
    import statistics
    import time

    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + steps):
        for name, fn in variants.items():
            sync(trainer)
            t = time.perf_counter()
            fn()
            sync(trainer)
            if i >= warmup:
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def device_name(trainer: Trainer) -> str:
    dev = trainer.placement.device
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
