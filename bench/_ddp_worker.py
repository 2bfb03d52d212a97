"""One process of bench/ddp_scaling.py, started by torchrun: times training steps of a small plan."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.distributed import barrier, from_env, gather_objects, join, leave
from ditsr_plan.runtime.train.device import place
from ditsr_plan.runtime.train.trainer import Trainer


def main() -> None:
    plan, steps, warmup, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    ranks = join(from_env(), "cpu")
    trainer = Trainer(compile_plan(plan), place("cpu", "fp32"), ranks)
    step0 = 1000  # inside the plan's second stage: every term live
    for step in range(step0, step0 + warmup):
        trainer.train_step(step, [trainer.data.batch(step, 0, trainer.first_sample)])
    barrier(ranks)
    t = time.perf_counter()
    for step in range(step0 + warmup, step0 + warmup + steps):
        trainer.train_step(step, [trainer.data.batch(step, 0, trainer.first_sample)])
    barrier(ranks)
    seconds = time.perf_counter() - t
    seconds_all = gather_objects(ranks, seconds)
    if ranks.main:
        print(
            json.dumps(
                {"world": ranks.world, "seconds": max(seconds_all), "steps": steps, "batch": trainer.data.batch_size}
            )
        )
    leave(ranks)


if __name__ == "__main__":
    main()
