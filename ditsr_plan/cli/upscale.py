"""``ditsr-plan upscale MODEL INPUT... -o OUT``: a trained model on images (``runtime/upscale``)."""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from pathlib import Path

from ditsr_plan.terminal import printable, shown

from .output import Output
from .plans import EXIT_FINDINGS, EXIT_OK, UsageError

SAMPLING_OPTIONS = {"steps": "--steps", "lq_init": "--lq-init", "cfg": "--cfg", "seed": "--seed"}


def add_upscale_command(sub, common: list) -> None:
    """The upscale command's grammar (its own block: the other commands' are in arguments.py)."""
    p = sub.add_parser(
        "upscale", parents=common, help="upscale images with a trained model (a run, a checkpoint or an export)"
    )
    p.add_argument("model", metavar="MODEL", help="a run folder, RUN/checkpoints/step-N, or an 'export --merge' folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and folders (searched recursively)")
    p.add_argument("-o", "--out", metavar="OUT", required=True, help="the folder to write (sub-folders kept)")
    defaults = "default: the run's eval block"
    p.add_argument("--steps", type=int, metavar="N", help=f"sampler steps ({defaults})")
    p.add_argument("--lq-init", type=float, metavar="S", help=f"fraction of the schedule skipped ({defaults})")
    p.add_argument("--cfg", type=float, metavar="G", help=f"classifier-free guidance scale ({defaults})")
    p.add_argument("--seed", type=int, metavar="N", help=f"the sampler's noise ({defaults})")
    p.add_argument(
        "--scale", type=_positive, metavar="F", help="output scale: the model's (default) or smaller, by a final resize"
    )
    p.add_argument(
        "--tile",
        type=_tile_px,
        metavar="PX",
        help="tile side in output pixels, or auto / off (default: the eval block's)",
    )
    p.add_argument(
        "--overlap", type=_tile, metavar="PX", help="tile overlap in output pixels, or auto (default: the eval block's)"
    )
    p.add_argument("--color-fix", choices=("wavelet", "adain", "none"), help="colour correction to the LR's")
    p.add_argument("--no-ema", action="store_true", help="a run's trained weights, not their EMA")
    p.add_argument(
        "--suffix", default="", metavar="S", help="added to each output's name before its extension (default none)"
    )
    p.add_argument("--ext", choices=("png", "jpg", "same"), default="same", help="output type (default: the input's)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: keep them)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument(
        "--max-pixels", type=int, default=100_000_000, metavar="N", help="refuse inputs above N pixels (default 1e8)"
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _tile(text: str) -> int | str:
    if text in ("auto", "off"):
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of pixels, auto or off")
    return int(text)


def _tile_px(text: str) -> int | str:
    value = _tile(text)
    if isinstance(value, int) and not 16 <= value <= 65536:
        raise argparse.ArgumentTypeError(f"a tile of {value} px: give 16 to 65536 px, auto or off")
    return value


def _options(args: argparse.Namespace, pipe) -> dict:
    """The pipeline call's keywords from the command line, each checked like the eval block's setting."""
    from pydantic import ValidationError

    from ditsr_plan.settings.timesteps import below_t_min

    given = {"steps": args.steps, "lq_init": args.lq_init, "cfg": args.cfg, "seed": args.seed}
    given |= {"tile": args.tile, "overlap": args.overlap, "color_fix": args.color_fix}
    if isinstance(args.tile, int) and isinstance(args.overlap, int) and args.overlap >= args.tile:
        raise UsageError(f"--overlap {args.overlap}: tiles of {args.tile} px overlap by less than a tile")
    try:
        resolved = pipe.settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        raise UsageError(f"--{name.replace('_', '-')}: {first['msg']}") from None
    if resolved.steps > pipe.diffusion.train_steps:
        raise UsageError(f"--steps {resolved.steps}: the model's diffusion has {pipe.diffusion.train_steps} timesteps")
    untrained = below_t_min(resolved, pipe.diffusion)
    if untrained:  # told, not refused: the user may want to see what the model does there
        fix = (
            f"leave --steps at the model's {pipe.sampling.steps}"
            if args.steps is not None and below_t_min(pipe.sampling, pipe.diffusion) is None
            else "its own sampling settings do this: export the run again, or give --steps"
        )
        _warn(f"warning: the {untrained}; the SR may be worse than the model can do ({fix})")
    if args.scale is not None and args.scale > pipe.scale:
        raise UsageError(f"--scale {args.scale:g} is above the model's scale {pipe.scale}")
    options = {k: v for k, v in given.items() if k not in ("steps", "seed")}
    options["num_inference_steps"] = args.steps
    options["generator"] = args.seed
    options["outscale"] = None if args.scale in (None, pipe.scale) else args.scale
    return options


def cmd_upscale(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.runtime.errors import RunFailure
    from ditsr_plan.runtime.upscale.job import check_out, load_model, plan_work, run_job
    from ditsr_plan.runtime.upscale.pipeline import UntrainedTimestepsWarning

    target = Path(args.out)
    if args.max_pixels < 1:
        raise UsageError("--max-pixels must be at least 1")
    if not args.out or not all(args.inputs) or not args.model:
        raise UsageError("an empty path: give MODEL, every INPUT and -o OUT by name ('.' for this folder)")
    if any(sep in args.suffix for sep in ("/", "\\", "\0")) or args.suffix in (".", ".."):
        raise UsageError(f"--suffix {shown(args.suffix)}: a suffix of the file name, without a folder separator")
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", args.device):
        raise UsageError(f"--device {shown(args.device)}: expected auto, cpu, cuda or cuda:N")
    try:
        check_out(target)
        work, problems = plan_work([Path(i) for i in args.inputs], target, args.suffix, args.ext)
        for source, why in problems:
            _warn(f"skipped {shown(source)}: {why}")
        if not work:
            raise UsageError("no image to upscale in " + ", ".join(shown(i) for i in args.inputs))
        out.detail("loading the model")
        pipe = load_model(Path(args.model), ema=not args.no_ema, note=lambda line: out.info(f"note: {line}"))
        options = _options(args, pipe)
        pipe.to(args.device)
        out.info(_header(pipe, work, options))
        with warnings.catch_warnings():  # told once above, in the command's words
            warnings.simplefilter("ignore", UntrainedTimestepsWarning)
            outcome = run_job(pipe, work, options, args.overwrite, out.info, args.max_pixels, _warn)
    except RunFailure as exc:
        raise UsageError(str(exc)) from None
    failed = problems + outcome.failed
    summary = f"wrote {len(outcome.written)} image{'s' if len(outcome.written) != 1 else ''} to {shown(target)}"
    if outcome.kept:
        summary += f"; kept {len(outcome.kept)} that existed (--overwrite replaces them)"
    if failed:
        summary += f"; skipped {len(failed)}: " + ", ".join(shown(s) for s, _ in failed[:5])
        summary += f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    print(summary)
    return EXIT_FINDINGS if failed else EXIT_OK


def _warn(line: str) -> None:
    """What was skipped and why: shown with -q too."""
    print(printable(f"ditsr-plan upscale: {line}"), file=sys.stderr)


def _header(pipe, work, options: dict) -> str:
    settings = pipe.settings(
        steps=options.get("num_inference_steps"), **{k: options.get(k) for k in ("lq_init", "cfg", "tile", "overlap")}
    )
    source = pipe.source
    what = f"step {source['step']}, {'EMA' if source['ema'] else 'trained weights'}" if "step" in source else "export"
    tile = pipe.tiles(1 << 16, 1 << 16, settings)[0]
    overlap = settings.overlap if settings.overlap != "auto" else tile // 4
    tiles = "whole images (tiles off)" if settings.tile == "off" else f"tiles of {tile} px overlapping {overlap} px"
    scale = options["outscale"] or pipe.scale
    return (
        f"upscale: {len(work)} image{'s' if len(work) != 1 else ''} x{scale:g} ({what}) on {pipe.device}; DDIM "
        f"{settings.steps} step{'s' if settings.steps != 1 else ''} ({settings.spacing} spacing, start noise "
        f"{settings.start_noise:g}), lq_init {settings.lq_init:g}, {tiles}, "
        f"colour fix {options.get('color_fix') or settings.color_fix}"
    )
