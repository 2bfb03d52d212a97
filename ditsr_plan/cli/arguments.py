"""The command line's grammar: every command, its positionals and options, with their help texts."""

from __future__ import annotations

import argparse
import os

from ditsr_plan import __version__

PLAN_HELP = "a plan file; '-' reads it from standard input"
GRAPH_HELP = "a plan file, a compiled graph (.json from 'compile -o') or a run folder; '-' reads a plan from stdin"


def _time_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"time scale must be a positive number, not {text}")
    return value


def _step(text: str) -> int:
    from ditsr_plan.settings.numbers import NumberError, parse_steps

    try:
        return parse_steps(text)
    except NumberError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _codes(text: str) -> list[str]:
    return [c.strip().upper() for c in text.split(",") if c.strip()]


def _figure(text: str) -> str:
    from ditsr_plan.compiler.plot import figure_format

    try:
        figure_format(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_time_scale(p: argparse.ArgumentParser, default: float | None = 1.0) -> None:
    p.add_argument(
        "--time-scale",
        type=_time_scale,
        default=default,
        metavar="F",
        help="multiply every step quantity by F (rounded to whole steps), keeping the shape"
        + ("" if default else "; --resume reuses the run's own"),
    )


def _add_set(p: argparse.ArgumentParser, resume: bool = False) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=None if resume else [],
        metavar="NAME.KEY=VALUE",
        help="override a setting of a block or a term, validated like the file (repeatable)"
        + ("; --resume reuses the run's own" if resume else ""),
    )


def _add_format(p: argparse.ArgumentParser, choices: dict[str, str]) -> None:
    p.add_argument(
        "--format",
        choices=tuple(choices),
        default=next(iter(choices)),
        help="; ".join(f"{name}: {what}" for name, what in choices.items()),
    )


def _add_plot(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--plot", type=_figure, metavar="FILE.png", help=f"{what} (.png, .svg, .pdf or .jpg, by suffix)")


def _verbosity() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    group.add_argument("-v", "--verbose", action="store_true", help="also print what is being done")
    return common


PLAN_COMMANDS = frozenset({"compile", "show", "lint", "rules", "diff", "fmt"})  # what _plan_commands adds


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's grammar. For a ``command`` of :data:`PLAN_COMMANDS` (the first word of the command
    line), only the plan commands' part of it: enough to parse that command line, in a third of the time (the
    plan commands answer at once: bench/cli_latency.py)."""
    parser = argparse.ArgumentParser(
        prog="ditsr-plan",
        description="Plan files for diffusion-transformer super-resolution training: compile, show, lint, "
        "diff and format loss schedules; run, validate and compare trainings.",
        epilog="Exit codes: 0 success; 1 findings (lint), differences (diff) or unformatted files (fmt --check, "
        "--diff); 2 bad input or an error; 130/143 a run stopped by SIGINT/SIGTERM after writing a checkpoint.",
    )
    parser.add_argument("--version", action="version", version=f"ditsr-plan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_verbosity()]
    _plan_commands(sub, common)
    if command in PLAN_COMMANDS:
        return parser
    _run_commands(sub, common)
    _setup_commands(sub, common)
    # upscale: a trained model on images (its grammar is in cli/upscale.py)
    from .upscale import add_upscale_command

    add_upscale_command(sub, common)
    return parser


def _plan_commands(sub, common: list) -> None:
    """compile, show, lint, rules, diff, fmt: commands on plans."""
    p = sub.add_parser("compile", parents=common, help="compile a plan to its schedule graph (JSON)")
    p.add_argument("plan", help=PLAN_HELP)
    _add_time_scale(p)
    _add_set(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the JSON here instead of standard output")

    p = sub.add_parser("show", parents=common, help="what a plan trains: stages x terms, settings, or one step")
    p.add_argument("plan", help=GRAPH_HELP)
    _add_time_scale(p)
    _add_set(p)
    p.add_argument("--at", type=_step, metavar="STEP", help="the values at this step (3000, 3k, 1.5k)")
    p.add_argument(
        "--params",
        action="store_true",
        help="the generator's trained and frozen parameters per group and a memory estimate, built from the "
        "model folder's config.json alone (no weight read)",
    )
    _add_format(p, {"text": "tables for people", "json": "the same as JSON"})
    _add_plot(p, "also draw every weight over the steps, stages as bands")

    p = sub.add_parser("lint", parents=common, help="find the schedule mistakes of the loss notes")
    p.add_argument(
        "paths", nargs="*", default=["."], metavar="PLAN|DIR", help="plans, or folders searched for *.plan (default .)"
    )
    _add_time_scale(p)
    _add_set(p)
    _add_format(
        p,
        {
            "text": "findings with their lines and hints",
            "json": "a list of findings",
            "github": "GitHub workflow commands",
            "sarif": "SARIF 2.1.0",
        },
    )
    p.add_argument(
        "--select", type=_codes, default=None, metavar="CODES", help="only these rules (codes or prefixes: G,W001)"
    )
    p.add_argument("--ignore", type=_codes, default=None, metavar="CODES", help="skip these rules")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="CODE.NAME=VALUE",
        help="change a rule's threshold, e.g. G001.max=0.08 (see 'ditsr-plan rules')",
    )

    p = sub.add_parser("rules", parents=common, help="the lint rules with their documentation")
    p.add_argument("codes", nargs="*", metavar="CODE", help="only these rules (codes or prefixes: G001, G)")

    p = sub.add_parser("diff", parents=common, help="what changes in training between two plans")
    p.add_argument("a", help=GRAPH_HELP)
    p.add_argument("b", help=GRAPH_HELP)
    _add_time_scale(p)
    _add_set(p)
    _add_format(p, {"text": "per term, the step ranges where the plans differ", "json": "the same as JSON"})
    _add_plot(p, "also draw the knobs that differ (a solid, b dashed)")

    p = sub.add_parser("fmt", parents=common, help="rewrite plans in the canonical format")
    p.add_argument("paths", nargs="+", metavar="PLAN|DIR", help="plans or folders; '-': stdin to stdout")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not formatted")
    p.add_argument(
        "--diff", action="store_true", help="change nothing; print what would change as a unified diff (exit 1 if any)"
    )


def _run_commands(sub, common: list) -> None:
    """run, matrix, compare, report: commands that train or read run folders."""
    p = sub.add_parser("run", parents=common, help="train a plan (CUDA when present, CPU otherwise)")
    p.add_argument("plan", help="a plan file")
    _add_time_scale(p, default=None)
    p.add_argument("--out", metavar="DIR", help="run folder (default: run out=..., else runs/<plan>-<time>)")
    _add_set(p, resume=True)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint (of --out, else the newest runs/<plan>-*)",
    )
    p.add_argument(
        "--force", action="store_true", help="resume even if the plan changed (what changed is printed first)"
    )
    p.add_argument("--overwrite", action="store_true", help="start again in a run folder that is not empty")

    p = sub.add_parser(
        "matrix", parents=common, help="run several plans one after another (skips finished runs, resumes one)"
    )
    p.add_argument("plans", nargs="+", metavar="PLAN", help="plan files; each runs in OUT/<plan name>")
    _add_time_scale(p)
    p.add_argument("--out", metavar="DIR", default=os.path.join("runs", "matrix"), help="default: runs/matrix")
    _add_set(p)
    p.add_argument("--overwrite", action="store_true", help="run every plan again from step 0")

    p = sub.add_parser("compare", parents=common, help="final and best validation metrics of runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    _add_format(p, {"text": "aligned columns", "markdown": "a Markdown table", "json": "one object per run"})
    _add_plot(p, "the validation images of every run side by side")

    p = sub.add_parser(
        "export", parents=common, help="a run's generator as one diffusers folder (LoRA merged, conditioning in)"
    )
    p.add_argument("run", metavar="RUN", help="a finished run folder of a pretrained model (model pixart|dit path=)")
    p.add_argument("--merge", metavar="OUT", required=True, help="the folder to write (from_pretrained loads it)")
    p.add_argument("--no-ema", action="store_true", help="the trained weights themselves, not their EMA")

    _pack_command(sub, common)

    p = sub.add_parser("evaluate", parents=common, help="score a trained checkpoint on a validation pack")
    p.add_argument(
        "target", metavar="RUN_OR_CHECKPOINT", help="a run folder (its newest checkpoint) or RUN/checkpoints/step-N"
    )
    p.add_argument("--pack", metavar="DIR", required=True, help="a pack folder (gt*/ and lq*/ of the same file names)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the plan's eval steps)")
    p.add_argument("--lq-init", type=float, help="fraction of the schedule skipped (default: the plan's)")
    p.add_argument(
        "--pack-input",
        choices=("auto", "stored", "upsample"),
        help="the model's input: the pack's stored upsampled LR (lq512/) or the true LR upsampled here "
        "(default: the plan's eval pack_input, auto)",
    )
    p.add_argument("--limit", type=int, help="the pack's first N images only")
    p.add_argument("--no-ema", action="store_true", help="the trained weights themselves, not their EMA")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where the SR images, worst-best.png and results.json go (default: RUN/evaluate/<pack>-step-N); "
        "it must be empty or an earlier evaluation of the same checkpoint and pack",
    )
    _add_format(p, {"text": "aligned columns", "markdown": "a Markdown table", "json": "everything, one object"})

    p = sub.add_parser("report", parents=common, help="write a run's self-contained HTML report")
    p.add_argument("run", metavar="RUN", help="a run folder")
    p.add_argument("-o", "--output", metavar="FILE.html", help="default: RUN/report.html")


def _pack_command(sub, common: list) -> None:
    """pack make: a validation pack from a folder of HR images."""
    p = sub.add_parser("pack", parents=common, help="validation packs: 'pack make HR_DIR OUT' makes one")
    packs = p.add_subparsers(dest="pack_command", metavar="make", required=True)
    p = packs.add_parser(
        "make", parents=common, help="crop and degrade N images of a folder into a validation pack (deterministic)"
    )
    p.add_argument("hr_dir", metavar="HR_DIR", help="a folder of HR images (searched recursively)")
    p.add_argument("out", metavar="OUT", help="the pack folder to write (gt/, lq/, manifest.json); must be new")
    p.add_argument("--n", type=int, default=50, help="images in the pack (default 50, the reference's)")
    p.add_argument("--size", type=int, default=512, help="GT crop side in pixels (default 512)")
    p.add_argument("--scale", type=int, help="GT = scale x LR (default: the --plan's data scale, else 4)")
    p.add_argument("--seed", type=int, default=3407, help="which images and crops, and the degradation's draws")
    p.add_argument(
        "--plan",
        metavar="PLAN",
        help="degrade as this plan's data/degrade blocks do (default: highorder, the reference's)",
    )
    _add_set(p)
    p.add_argument(
        "--strict", action="store_true", help="an unreadable or too-large image is an error (default: skipped, listed)"
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=100_000_000,
        metavar="N",
        help="images above N pixels are refused before decoding (default 100000000, as data max_pixels=)",
    )


def _setup_commands(sub, common: list) -> None:
    """check, tiny-models: what a run needs, checked before it starts; stand-ins for an offline smoke test."""
    p = sub.add_parser(
        "check",
        parents=common,
        help="every folder, model, VAE, LPIPS trunk, device and precision a run needs, checked in seconds",
    )
    p.add_argument("plan", help="a plan file")
    _add_time_scale(p)
    _add_set(p)

    p = sub.add_parser(
        "tiny-models",
        parents=common,
        help="write tiny random PixArt and VAE folders and a few HR photos: the reference plan, offline, on a CPU",
    )
    p.add_argument("dir", metavar="DIR", help="the folder to write (PixArt-tiny/, sd-vae-tiny/, hr/); must be new")
