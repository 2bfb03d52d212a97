"""DDP scaling on CPU (gloo): steps per second of 1 vs 2 processes started by torchrun, each process
with the same per-rank batch (so 2 processes train on twice the images per step), on a small plan with
every term live. By default the machine's cores are split between the processes (1 process: all of
them; 2 processes: half each), which is the question "does DDP pay on this machine".

    python bench/ddp_scaling.py [--steps 20] [--threads-per-proc N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAN = """plan ddp_bench
steps 2k
loss v         vpred     min_snr=5
loss latent_l1 latent_l1
loss lpips     lpips     net=vgg backbone=random
loss edge      edge
loss flat      flat
loss gan       patchgan  layers=2 ndf=16
ema    decay=0.999
model  dit preset=tiny
latent pixel_unshuffle factor=4
data   builtin crop=64 batch={batch} scenes=2
pixel  patch=32 margin=8
run    device=cpu
stage A 0..500: v 1; latent_l1 1
stage B 500..: v 1; latent_l1 1; lpips 0.3; edge 0.05; flat 0.08; gan 0.03
"""


def measure(nproc: int, plan: Path, steps: int, warmup: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += [str(HERE / "_ddp_worker.py"), str(plan), str(steps), str(warmup), str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"torchrun --nproc_per_node {nproc} failed:\n{done.stderr[-3000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="per-rank batch")
    parser.add_argument("--threads-per-proc", type=int, default=0, help="0: the cores split between the processes")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    plan = Path(tempfile.mkdtemp(prefix="ditsr-ddp-")) / "ddp_bench.plan"
    plan.write_text(PLAN.format(batch=args.batch))
    results = {}
    for nproc in (1, 2):
        threads = args.threads_per_proc or max(1, cores // nproc)
        r = measure(nproc, plan, args.steps, args.warmup, threads)
        r["threads"] = threads
        results[nproc] = r
        print(f"measured {nproc} process(es)", file=sys.stderr, flush=True)
    print(f"CPU, {cores} cores · gloo · per-rank batch {args.batch} · {args.steps} timed steps after {args.warmup}")
    print(f"{'processes':>9} {'threads each':>12} {'steps/s':>8} {'images/s':>9}")
    rate = {}
    for nproc, r in results.items():
        steps_per_s = r["steps"] / r["seconds"]
        rate[nproc] = (steps_per_s, steps_per_s * r["batch"] * nproc)
        print(f"{nproc:>9} {r['threads']:>12} {steps_per_s:8.2f} {rate[nproc][1]:9.2f}")
    print(
        f"2 vs 1 process: steps/s ratio {rate[2][0] / rate[1][0]:.2f}, images/s ratio {rate[2][1] / rate[1][1]:.2f} "
        "(ideal: 1.00 and 2.00 with a core per process to spare)"
    )


if __name__ == "__main__":
    main()
