"""Overhead: the runtime's step vs a minimal hand-written loop computing the same live terms (stage C:
everything live, D trained), same model and batch, measured alternately in one process.
Target: ratio at most 1.03.

    python bench/overhead.py [--size cpu|gpu] [--steps 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import alternate, build, device_name


def hand_written_step(trainer, step: int, batch, weights: dict[str, float], live: list[str]) -> None:
    """The same computation written out by hand: no graph lookups, no checks, no bookkeeping."""
    trainer.optimizer.zero_grad(set_to_none=True)
    with trainer.placement.autocast():
        s = trainer.forward(batch, step, 0, decode=True)
        loss = sum(weights[n] * trainer.terms[n](s) for n in live)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
    trainer.optimizer.step()
    trainer.ema.update(trainer.model, step)
    trainer.terms["gan"].after_step([(s.gt_patch, s.pred_patch)], step, 1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("cpu", "gpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    trainer = build(args.size)
    step = 25_001  # stage C: every term live; not an R1 step (r1_every=16)
    live = trainer.graph.live_terms(step)
    weights = trainer.graph.weights_at(step)
    batch = trainer.data.batch(step)
    trainer.train_step(step, [batch])  # first-live checks happen once, before timing
    medians = alternate(
        trainer,
        {
            "runtime": lambda: trainer.train_step(step, [batch]),
            "hand": lambda: hand_written_step(trainer, step, batch, weights, live),
        },
        args.steps,
    )
    r, h = medians["runtime"], medians["hand"]
    name = device_name(trainer)
    print(f"device {name} · size {args.size} · {args.steps} steps each, medians · live: {', '.join(live)}")
    print(f"runtime step:       {r * 1000:8.1f} ms")
    print(f"hand-written step:  {h * 1000:8.1f} ms")
    print(f"ratio: {r / h:.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
