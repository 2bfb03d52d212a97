"""Live set: the runtime's stage-A step vs a step that computes every declared term (decode + LPIPS +
edge/flat + FFL + the GAN's D(fake)) at weight 0, as the reference scripts did. Same model, same batch,
measured alternately in one process. Target: the runtime's step at least 1.5x faster.

    python bench/live_set.py [--size cpu|gpu] [--steps 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import alternate, build, device_name


def naive_step(trainer, step: int, batch) -> None:
    """What the scripts did: decode the pixel patch and compute every declared term, weight 0 or not."""
    weights = trainer.graph.weights_at(step)
    trainer.optimizer.zero_grad(set_to_none=True)
    with trainer.placement.autocast():
        s = trainer.forward(batch, step, 0, decode=True)
        loss = sum(weights[name] * term(s) for name, term in trainer.terms.items())
    loss.backward()
    trainer._clip()
    trainer.optimizer.step()
    if trainer.ema is not None:
        trainer.ema.update(trainer.model, step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("cpu", "gpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    trainer = build(args.size)
    step = 100  # inside stage A: only v and latent_l1 are live
    assert trainer.graph.live_terms(step) == ["v", "latent_l1"]
    batch = trainer.data.batch(step)
    medians = alternate(
        trainer,
        {"runtime": lambda: trainer.train_step(step, [batch]), "naive": lambda: naive_step(trainer, step, batch)},
        args.steps,
    )
    r, n = medians["runtime"], medians["naive"]
    name = device_name(trainer)
    print(f"device {name} · size {args.size} · {args.steps} steps each, medians")
    print(f"runtime stage-A step (v, latent_l1 only):          {r * 1000:8.1f} ms")
    print(f"every declared term each step (as the scripts did): {n * 1000:8.1f} ms")
    print(f"speed-up: {n / r:.2f}x (target >= 1.5x)")


if __name__ == "__main__":
    main()
