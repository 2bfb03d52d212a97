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


def pretrained_plan(folder: Path, model_line: str, steps: int = 4, ckpt: int = 2, extra: str = "") -> Path:
    """``folder/pretrained.plan``: the tiny VAE latent (made in ``folder``), a model line of your own, every term
    kind (stage A reconstruction only, then everything live), EMA."""
    vae = make_vae(folder)
    half = steps // 2
    path = folder / "pretrained.plan"
    path.write_text(
        f"plan pretrained\nsteps {steps}\n{ALL_TERMS}{model_line}\nlatent vae path={vae}\n"
        "data   builtin crop=32 batch=2 scenes=2\npixel  patch=16 margin=0\nema    decay=0.9\n"
        f"run    seed=7 checkpoint_every={ckpt} keep=5\nlog    every=1 tensorboard=off\n{extra}"
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


def finished_run_and_pack(root: Path, run_name: str) -> Path:
    """Under ``root``: ``pack/``, a 2-image pack of scikit-image photos, and ``run_name/``, a finished 4-step
    run of the tiny model (v term only, checkpoints at 2 and 4, EMA). Returns the plan."""
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
    run_plan(compile_plan(plan), root / run_name, quiet=True)
    return plan
