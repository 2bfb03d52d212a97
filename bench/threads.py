"""CPU threads: a fixed training step with torch's default thread count and with one thread, with the
machine idle and with a competing busy process.

``python bench/threads.py [--steps N] [--plan plans/demo.plan] [--at STEP]``: builds the plan's trainer on
the CPU and times ``--steps`` steps at step ``--at`` (default: inside stage C, every term live) for each
of four cases, each in a fresh process (the thread count of a process is fixed once its first parallel
region ran): {torch's default thread count, 1 thread, ``run threads=auto``} x {idle, one busy process
spinning on a core}. Prints the median step time of each and the ratios that matter: how much the
competitor slows each setting down, and what ``auto`` chose.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys

CHILD = r"""
import statistics, sys, time, torch
from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.train.device import place
from ditsr_plan.runtime.train.trainer import Trainer
threads, plan, at, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if threads == "auto":
    from ditsr_plan.runtime.train.device import set_threads
    set_threads("auto")
elif threads != "default":
    torch.set_num_threads(int(threads))
trainer = Trainer(compile_plan(plan), place("cpu", "fp32"))
batches = [trainer.data.batch(at, micro) for micro in range(trainer.accum)]
trainer.train_step(at, batches)
times = []
for i in range(steps):
    start = time.perf_counter()
    trainer.train_step(at + 1 + i, batches)
    times.append(time.perf_counter() - start)
print(torch.get_num_threads(), statistics.median(times) * 1000)
"""


def _spin() -> None:
    while True:
        pass


def _measure(threads: str, plan: str, at: int, steps: int, busy: bool) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    competitor = multiprocessing.Process(target=_spin, daemon=True) if busy else None
    if competitor:
        competitor.start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, threads, plan, str(at), str(steps)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split()
    finally:
        if competitor:
            competitor.terminate()
            competitor.join()
    return int(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="plans/demo.plan")
    parser.add_argument("--at", type=int, default=None, help="step to time (default: the plan's last stage)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    from ditsr_plan.compiler import compile_plan

    graph = compile_plan(args.plan)
    at = args.at if args.at is not None else graph.stages[-1].start + 1
    print(f"plan {graph.name}, step {at}, {args.steps} timed steps, {os.cpu_count()} CPUs")
    results = {}
    for busy in (False, True):
        for threads in ("default", "1", "auto"):
            n, ms = _measure(threads, args.plan, at, args.steps, busy)
            results[threads, busy] = ms
            print(f"  {'busy' if busy else 'idle'}  {threads:>7} threads ({n}): {ms:8.1f} ms/step")
    for threads in ("default", "1", "auto"):
        print(f"  competitor slows '{threads}' down {results[threads, True] / results[threads, False]:.2f}x")
    print(
        f"  idle: 1 thread / default = {results['1', False] / results['default', False]:.2f}x; "
        f"busy: default / 1 thread = {results['default', True] / results['1', True]:.2f}x; "
        f"busy: default / auto = {results['default', True] / results['auto', True]:.2f}x"
    )


if __name__ == "__main__":
    main()
