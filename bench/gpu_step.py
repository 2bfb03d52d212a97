"""One-GPU step: images per second and peak GPU memory of a reference-shaped configuration (DiT-B/2,
256 px HR, VAE latent, pixel patch decoded through the VAE, LPIPS with a random trunk, PatchGAN + R1,
EMA), comparing in one process:

- naive: every declared term computed every step at its weight, 0 or not (what the scripts did);
- runtime stage A: only v and latent_l1 live (no decode, no LPIPS, no D);
- runtime stage C: every term live, D trained;
each eager and under ``torch.compile`` (the generator compiled, as ``run compile=true`` does).
On CPU (no CUDA) it runs at a reduced size (tiny DiT, 128 px) and reports no memory figure.

    python bench/gpu_step.py [--size cpu|gpu] [--steps 20] [--backend inductor] [--no-compile]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import alternate, build, device_name, sync
from live_set import naive_step

STEP_A, STEP_C = 100, 25_001  # inside stage A; inside stage C, not an R1 step (r1_every=16)


def _peak_memory(trainer, fn) -> float | None:
    """Peak GPU memory (GiB) of one call of ``fn``; None on CPU."""
    if trainer.placement.device.type != "cuda":
        return None
    sync(trainer)
    torch.cuda.reset_peak_memory_stats(trainer.placement.device)
    fn()
    sync(trainer)
    return torch.cuda.max_memory_allocated(trainer.placement.device) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("cpu", "gpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager, ...)")
    parser.add_argument("--no-compile", action="store_true", help="eager variants only")
    args = parser.parse_args()
    trainer = build(args.size)
    assert trainer.graph.live_terms(STEP_A) == ["v", "latent_l1"]
    batch_a, batch_c = trainer.data.batch(STEP_A), trainer.data.batch(STEP_C)
    trainer.train_step(STEP_C, [batch_c])  # first-live checks once, before timing

    eager = trainer.net
    modes = {"eager": eager}
    if not args.no_compile:
        modes["compiled"] = torch.compile(eager, backend=args.backend, dynamic=False)

    def using(net, fn):
        def call():
            trainer.net = net
            fn()

        return call

    variants, memory = {}, {}
    for mode, net in modes.items():
        steps = {
            "naive (every term, every step)": lambda: naive_step(trainer, STEP_C - 1, batch_c),
            "runtime stage A": lambda: trainer.train_step(STEP_A, [batch_a]),
            "runtime stage C": lambda: trainer.train_step(STEP_C, [batch_c]),
        }
        for name, fn in steps.items():
            key = f"{name}, {mode}"
            variants[key] = using(net, fn)
            if mode == "compiled":
                print(f"compiling for {key} ...", file=sys.stderr, flush=True)
                variants[key]()  # compile outside the timed rounds
            memory[key] = _peak_memory(trainer, variants[key])
    medians = alternate(trainer, variants, args.steps)
    trainer.net = eager

    images = trainer.data.batch_size
    base = medians["naive (every term, every step), eager"]
    dev = device_name(trainer)
    print(
        f"device {dev} · size {args.size} · batch {images} · {args.steps} steps each, medians, measured in turn"
        + (f" · compile backend {args.backend}" if not args.no_compile else "")
    )
    print(f"{'variant':44} {'ms/step':>9} {'images/s':>9} {'vs naive eager':>15} {'peak GiB':>9}")
    for key, seconds in medians.items():
        peak = memory[key]
        print(
            f"{key:44} {seconds * 1000:9.1f} {images / seconds:9.2f} {base / seconds:14.2f}x "
            f"{'n/a' if peak is None else f'{peak:.2f}':>9}"
        )
    if not args.no_compile:
        for name in ("naive (every term, every step)", "runtime stage A", "runtime stage C"):
            e, c = medians[f"{name}, eager"], medians[f"{name}, compiled"]
            print(f"compile speed-up, {name}: {e / c:.2f}x")


if __name__ == "__main__":
    main()
