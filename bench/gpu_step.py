"""One-GPU step: images per second and peak GPU memory of a reference-shaped configuration (DiT-B/2,
256 px HR, VAE latent, pixel patch decoded through the VAE, LPIPS with a random trunk, PatchGAN + R1,
EMA), comparing in one process:

- naive: every declared term computed every step at its weight, 0 or not (what the scripts did);
- runtime stage A: only v and latent_l1 live (no decode, no LPIPS, no D);
- runtime stage C: every term live, D trained;
each eager and under ``torch.compile`` (the generator compiled, as ``run compile=true`` does).
On CPU (no CUDA) it runs at a reduced size (tiny DiT, 128 px) and reports no memory figure.

``--model pixart-xl``: the reference's generator instead -- a PixArt-alpha XL/2-shaped transformer (28 blocks,
1152 wide, random weights, ~610M parameters) with LoRA r16 on its attention, the LR latent concatenated and
the LR adapter, SD-VAE-shaped VAE, 512 px crops (64 x 64 latent), bf16, the v10 schedule; activation
checkpointing off and on. ``--train scripts`` (the default) trains the reference scripts' set (LoRA + every
other transformer parameter and the scripts' pyramid adapter, ~489M: plans/reference/pixart_v10.plan),
``--train lora`` the LoRA-only variant (~19M). ``--batches 1,4``: the micro-batches measured (the scripts'
batch 1 x 16 accumulated peaks as one micro-batch of 1: gradients accumulate in place). Per stage of v10 it
times the runtime's step, and the step of the reference scripts (decode and every term, every step), and
reports images/s, peak memory, model FLOP utilisation (FLOPs counted
by torch's FlopCounterMode on the step without checkpointing, so recomputation is not counted) and the ratio
over the whole plan (stage times weighted by the stages' lengths). ``--model pixart-cpu`` runs the same code
at a toy size (a check of the benchmark, not a figure).

    python bench/gpu_step.py [--size cpu|gpu] [--steps 20] [--backend inductor] [--no-compile]
    python bench/gpu_step.py --model pixart-xl [--train scripts|lora] [--batches 1,4] [--steps 10] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import PIXART_SIZES, PIXART_STAGES, alternate, build, build_pixart, device_name, sync
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


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "4090": 165.0}  # dense


def _peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def _step_flops(trainer, step: int, batch) -> float:
    """Floating-point operations of one training step, as torch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.train_step(step, [batch])
    return float(counter.get_total_flops())


def _measure_pixart(trainer, steps: int, count_flops: bool) -> dict:
    """Per variant: median seconds and peak memory; the plan-weighted runtime step; the step's FLOPs."""
    step_c = PIXART_STAGES["C"][0]
    batches = {stage: trainer.data.batch(step) for stage, (step, _) in PIXART_STAGES.items()}
    trainer.train_step(step_c, [batches["C"]])  # first-live checks once, before timing
    flops = _step_flops(trainer, step_c, batches["C"]) if count_flops else None
    variants = {"scripts (every term, every step)": lambda: naive_step(trainer, step_c, batches["C"])}
    for stage, (step, _) in PIXART_STAGES.items():
        variants[f"runtime stage {stage}"] = lambda s=step, b=batches[stage]: trainer.train_step(s, [b])
    memory = {name: _peak_memory(trainer, fn) for name, fn in variants.items()}
    reserved = torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else None
    medians = alternate(trainer, variants, steps)
    total = sum(n for _, n in PIXART_STAGES.values())
    plan = sum(medians[f"runtime stage {s}"] * n for s, (_, n) in PIXART_STAGES.items()) / total
    return {"medians": medians, "memory": memory, "reserved": reserved, "plan": plan, "flops": flops}


def pixart(args) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ditsr-bench-pixart-"))
    rows, flops = [], {}
    for batch in args.batches:
        for checkpointing in (False, True):
            print(
                f"building {args.model} ({args.train}, batch {batch}, checkpointing {checkpointing}) ...",
                file=sys.stderr,
                flush=True,
            )
            trainer = build_pixart(args.model, checkpointing, folder, train=args.train, batch=batch)
            row = _measure_pixart(trainer, args.steps, count_flops=batch not in flops)
            flops[batch] = flops.get(batch) or row["flops"]
            rows.append((batch, checkpointing, row))
            dev = device_name(trainer)
            params = sum(p.numel() for p in trainer.model.parameters())
            trained = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            del trainer
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
    peak = _peak_tflops(dev, args.peak_tflops)
    config = PIXART_SIZES[args.model]
    print(
        f"device {dev} · {args.model}: {params / 1e6:.0f}M parameters, {trained / 1e6:.1f}M trained "
        f"(--train {args.train}) · {config[1]} px crops · {config[6]} · {args.steps} steps each, medians · "
        "stage-C step " + ", ".join(f"batch {b}: {f / 1e12:.2f} TFLOP" for b, f in flops.items()) + " (FlopCounterMode)"
    )
    print(f"{'batch':>5} {'checkpointing':14} {'variant':34} {'ms/step':>9} {'images/s':>9} {'MFU':>6} {'peak GiB':>9}")
    for batch, checkpointing, row in rows:
        _print_row(batch, checkpointing, row, flops[batch], peak)
    if peak is None:
        print("MFU: peak bf16 FLOP/s of this device unknown (give --peak-tflops)")


def _print_row(batch: int, checkpointing: bool, row: dict, flops: float, peak: float | None) -> None:
    medians, memory, plan, reserved = row["medians"], row["memory"], row["plan"], row["reserved"]
    for name, seconds in medians.items():
        mfu = "" if peak is None or "stage C" not in name else f"{flops / seconds / (peak * 1e12):.1%}"
        mem = "n/a" if memory[name] is None else f"{memory[name]:.2f}"
        print(
            f"{batch:5} {checkpointing!s:14} {name:34} {seconds * 1000:9.1f} {batch / seconds:9.2f} {mfu:>6} {mem:>9}"
        )
    naive = medians["scripts (every term, every step)"]
    fits = (
        ""
        if reserved is None
        else f"; max reserved {reserved:.2f} GiB ({'fits' if reserved < 22.0 else 'does NOT fit'} a 24 GB card)"
    )
    print(
        f"{'':5} {'':14} whole v10 plan: runtime {plan * 1000:.1f} ms/step (stages weighted by length) vs scripts "
        f"{naive * 1000:.1f} -> {naive / plan:.2f}x (target >= 1.5x){fits}"
    )


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated micro-batch sizes, e.g. 1,4") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated micro-batch sizes >= 1, e.g. 1,4")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("dit", "pixart-xl", "pixart-cpu"), default="dit")
    parser.add_argument("--size", choices=("cpu", "gpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager, ...)")
    parser.add_argument("--no-compile", action="store_true", help="eager variants only")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, for MFU")
    parser.add_argument(
        "--train",
        choices=("scripts", "lora"),
        default="scripts",
        help="pixart: what trains -- the reference scripts' set (LoRA + the rest) or LoRA only",
    )
    parser.add_argument(
        "--batches", type=_batches, default=None, help="pixart: micro-batch sizes measured (default: 1,4 on a GPU)"
    )
    args = parser.parse_args()
    if args.batches is None:
        args.batches = [1, 4] if args.model == "pixart-xl" else [PIXART_SIZES.get(args.model, (0, 0, 1))[2]]
    if args.model != "dit":
        pixart(args)
        return
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
