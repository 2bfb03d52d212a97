"""Small plans and trainers for the runtime tests (CPU, tiny model, a few steps)."""

from __future__ import annotations

from pathlib import Path

from ditsr_plan.compiler import compile_plan

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
    tmp: Path,
    steps: int = 12,
    stages: str | None = None,
    ckpt: int = 6,
    extra: str = "",
    terms: str = ALL_TERMS,
    log: str = "every=1 tensorboard=off",
) -> Path:
    """A plan with every term kind: stage A (reconstruction only), then B with everything live."""
    half = steps // 2
    stages = stages or (
        f"stage A 0..{half}: v 1; latent_l1 1\nstage B {half}..: lpips 0.3; edge 0.05; flat 0.08; ffl 0.01; gan 0.03\n"
    )
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "tiny.plan"
    path.write_text(f"plan tiny\nsteps {steps}\n" + terms + SETTINGS.format(ckpt=ckpt, log=log) + extra + stages)
    return path


def trainer_for(plan: Path):
    """A CPU trainer of the plan at ``plan``."""
    from ditsr_plan.runtime.device import place
    from ditsr_plan.runtime.trainer import Trainer

    return Trainer(compile_plan(plan), place("cpu", "fp32"))


def tiny_trainer(tmp: Path, **kwargs):
    return trainer_for(tiny_plan(tmp, **kwargs))
