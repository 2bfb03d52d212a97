"""The commands that get a newcomer to a first run: ``check`` (everything a run needs, in seconds, without
torch) and ``tiny-models`` (random stand-ins for the reference's PixArt and VAE folders, for an offline smoke
test on a CPU). ``run`` does the same check before it builds anything (:func:`check_graph`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ditsr_plan.diagnostics import PlanError

from .output import Output
from .plans import EXIT_OK, UsageError

REFERENCE_PLAN = "plans/reference/pixart_v10.plan"
# what the reference plan needs changed to train in a few minutes on a CPU (besides its three folders)
SMOKE_SETS = (
    "run.precision=auto",
    "lpips.backbone=random",
    "eval.lpips=off",
    "data.crop=64",
    "pixel.patch=32",
    "pixel.margin=0",
    "optim.accum=1",
    "model.pyramid_width=32",  # the scripts' adapter at a quarter of its width (128: 114M parameters)
    "eval.size=64",
    "eval.steps=2",
)


def first_line(graph) -> str:
    """The plan's name, hash and steps: what ``run`` and ``check`` say first."""
    from ditsr_plan.settings.numbers import format_steps

    scale = f" (time scale {graph.time_scale:g})" if graph.time_scale != 1 else ""
    return f"plan {graph.name} · hash {graph.hash} · {format_steps(graph.total_steps)} steps{scale}"


def lint_lines(graph) -> list[str]:
    """The plan's lint findings, one headline each (``lint`` shows them with the line and the hint): what
    ``check`` and ``run`` say before anything is loaded. Findings never stop a run."""
    from ditsr_plan.compiler.lint import lint_graph
    from ditsr_plan.compiler.lint.rules import RULES

    findings = lint_graph(graph, RULES)
    if not findings:
        return []
    head = f"lint: {len(findings)} finding{'s' if len(findings) != 1 else ''} ('ditsr-plan lint' shows each hint):"
    return [head, *(f"  {d.headline()}" for d in findings)]


def check_graph(graph, found=None) -> None:
    """Look for every problem of a compiled plan's folders, models, device and precision: a
    :class:`PlanError` holding all of them (each at its plan position, with the --set that fixes it), the
    warnings with them. Warnings alone (an LPIPS trunk that torchvision would download) are printed and pass.
    ``found(line)`` hears what was found."""
    from ditsr_plan.diagnostics import render_all
    from ditsr_plan.runtime.preflight import positioned_sources, preflight

    from .output import use_color

    result = preflight(graph)
    for line in result.found:
        if found is not None:
            found(line)
    if not result.problems:
        return
    sources = positioned_sources(graph, result.problems)
    if any(d.severity == "error" for d in result.problems):
        raise PlanError(result.problems, sources)
    sys.stderr.write(render_all(result.problems, sources, color=use_color()) + "\n")


def cmd_check(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler import compile_plan

    graph = compile_plan(args.plan, args.time_scale, overrides=args.overrides)
    print(first_line(graph), flush=True)
    try:
        check_graph(graph, lambda line: print(f"  {line}", flush=True))
    except PlanError as exc:
        errors = sum(d.severity == "error" for d in exc.diagnostics)
        out.info(f"ditsr-plan check: {errors} problem(s) below, each with the --set that fixes it")
        raise
    out.info("ditsr-plan check: nothing missing: the run can start")
    for line in lint_lines(graph):
        out.info(line)
    _print_census(graph, out)
    return EXIT_OK


def _print_census(graph, out: Output) -> None:
    """What the generator trains and the memory it takes before activations (``show --params``' table), built
    on the meta device from the model's config alone: a pretrained model only (the tiny DiT of a plan trained
    from scratch is small)."""
    settings = graph.block("model")
    if getattr(settings, "path", None) is None:
        return
    out.info("loading torch to count the generator's parameters (show --params) ...")
    from ditsr_plan.runtime.errors import RunFailure
    from ditsr_plan.runtime.train.generators.census import census, census_text

    try:
        print(census_text(census(graph)), flush=True)
    except RunFailure as exc:
        out.info(f"ditsr-plan check: the generator could not be counted: {exc}")


def smoke_command(root: Path, plan: str = REFERENCE_PLAN, command: str = "check") -> str:
    """The command that runs ``plan`` on the stand-ins under ``root`` (what README's smoke test types)."""
    sets = [
        f"model.path={root / 'PixArt-tiny'}",
        f"latent.path={root / 'sd-vae-tiny'}",
        f"data.root={root / 'hr'}",
        *SMOKE_SETS,
    ]
    words = ["ditsr-plan", command, plan]
    if command == "run":
        words += ["--time-scale", "0.001"]
    return shlex.join(words + [w for s in sets for w in ("--set", s)])


def cmd_tiny_models(args: argparse.Namespace, out: Output) -> int:
    root = Path(args.dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"tiny-models: {root} exists and is not an empty folder")
    out.info("loading torch and diffusers ...")
    from ditsr_plan.stand_ins import make_pixart, make_vae, write_photos

    make_pixart(root / "PixArt-tiny", name="transformer")
    make_vae(root, name="sd-vae-tiny")
    write_photos(root / "hr")
    print(
        f"wrote {root}/: PixArt-tiny/transformer/ (a random 2-block PixArtTransformer2DModel), sd-vae-tiny/ "
        "(a random AutoencoderKL) and hr/ (3 photographs). They learn nothing real: they let the reference plan "
        "run end to end, offline, in a few minutes on a CPU:"
    )
    print(f"  {smoke_command(root)}")
    print(f"  {smoke_command(root, command='run')}")
    return EXIT_OK
