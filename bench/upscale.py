"""Upscaling time and peak memory by output size, on a demo-shaped model (plans/demo.plan's tiny DiT, patch 1,
in the exact pixel-unshuffle latent; random weights: the time and memory do not depend on training).

    python bench/upscale.py [--device cpu|cuda] [--sizes 512,1024,2048] [--steps 2]

Each size runs in a fresh process (peak memory is per process): the DDIM steps of the demo's eval block, tiles
of the eval block's automatic size (4 x the 64 px crop = 256 px, overlapping by 64 px). Reported: seconds,
seconds per output megapixel (flat when time is linear in pixels), peak memory (CPU: the process's peak
resident set; CUDA: torch's peak allocation) and its ratio to the smallest size's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(size: int, device: str, steps: int) -> dict:
    import torch

    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.train.generators import latent_and_generator
    from ditsr_plan.runtime.upscale.pipeline import DiTSRPipeline

    torch.manual_seed(0)
    graph = compile_plan("plans/demo.plan")
    latent, model = latent_and_generator(graph, torch.device("cpu"))
    data = graph.block("data")
    pipe = DiTSRPipeline(model, latent, graph.block("diffusion"), graph.block("eval"), data.scale, data.crop).to(device)
    settings = pipe.settings(steps=steps)
    lr = torch.rand(1, 3, size // data.scale, size // data.scale) * 2 - 1
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    sr = pipe.upscale_tensor(lr, settings)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert sr.shape[-1] == size
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    tile, tiles = pipe.tiles(size // data.scale, size // data.scale, settings)
    return {"size": size, "seconds": seconds, "peak_mib": peak, "loaded_mib": before, "tile": tile, "tiles": tiles}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.device, args.steps)))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        argv = [sys.executable, __file__, "--one", str(size), "--device", args.device, "--steps", str(args.steps)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["peak_mib"]
    print("| output | tiles | seconds | s / Mpx | peak memory | vs first |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        mpx = r["size"] ** 2 / 1e6
        print(
            f"| {r['size']} px | {r['tiles']} x {r['tile']} px | {r['seconds']:.1f} | {r['seconds'] / mpx:.1f} | "
            f"{r['peak_mib']:.0f} MiB | {r['peak_mib'] / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
