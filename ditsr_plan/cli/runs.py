"""The commands on runs and what they make: run, matrix, compare, report, export, pack, evaluate."""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ditsr_plan.diagnostics import PlanError
from ditsr_plan.terminal import printable

from .output import Output, write_json
from .plans import EXIT_OK, UsageError

if TYPE_CHECKING:  # imported where used: the plan commands start without pydantic's schemas built
    from ditsr_plan.runtime.train.degradation import DegradeSettings
    from ditsr_plan.settings.schemas import Eval


def cmd_run(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler import compile_plan

    from .setup import check_graph, first_line, lint_lines

    # before torch (seconds of imports): the plan, every --set and everything the run needs, then a first line.
    # A resume without --set takes the run's own (run.json, read after torch): its folders are checked as it loads
    say = out.info if os.environ.get("RANK", "0") == "0" else out.detail  # under torchrun rank 0 speaks
    graph = compile_plan(args.plan, args.time_scale or 1.0, overrides=args.overrides or ())
    own = args.resume and (args.time_scale is None or args.overrides is None)
    say(
        f"ditsr-plan run: {first_line(graph)}"
        + (" (resuming: the run's own time scale and --set apply)" if own else "")
    )
    if not (args.resume and args.overrides is None):
        check_graph(graph, out.detail)
        for line in lint_lines(graph):
            say(line)
    say("loading torch ...")
    from ditsr_plan.runtime.errors import RunFailure
    from ditsr_plan.runtime.run import RunInterrupted, launch

    try:
        launch(
            args.plan,
            args.out,
            args.time_scale,
            args.overrides,
            args.resume,
            args.force,
            args.overwrite,
            out.quiet,
            graph=graph,
        )
    except RunFailure as exc:
        raise UsageError(str(exc)) from None
    except RunInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 speaks for the run
            sys.stderr.write(f"ditsr-plan run: {printable(str(exc))}\n")
        return 128 + exc.signum
    return EXIT_OK


def cmd_matrix(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler import compile_plan

    from .setup import check_graph

    graphs, errors = [], []
    for plan in args.plans:  # every plan compiled and checked (folders, models, device) before the first runs
        try:
            graphs.append(compile_plan(plan, args.time_scale, overrides=args.overrides))
            check_graph(graphs[-1], out.detail)
        except PlanError as exc:
            errors.append(exc)
    if errors:
        raise PlanError.merge(errors)
    from ditsr_plan.runtime.errors import RunFailure
    from ditsr_plan.runtime.run import RunInterrupted
    from ditsr_plan.runtime.run.matrix import run_matrix

    try:
        folders = run_matrix(graphs, Path(args.out), args.overwrite, tuple(args.overrides), out.quiet)
    except RunFailure as exc:
        raise UsageError(str(exc)) from None
    except RunInterrupted as exc:
        again = shlex.join(["ditsr-plan", "matrix", *sys.argv[2:]]) if len(sys.argv) > 2 else "the same matrix"
        sys.stderr.write(
            f"ditsr-plan matrix: {str(exc).split('; continue with:')[0]}; run the matrix again to continue "
            f"(finished runs are skipped, this one resumes): {again}\n"
        )
        return 128 + exc.signum
    print("compare them: ditsr-plan compare " + " ".join(str(f) for f in folders))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.runtime.analysis.compare import eval_settings_differ, side_by_side, summarise, table
    from ditsr_plan.runtime.errors import RunFailure
    from ditsr_plan.runtime.records import json_safe

    runs = [Path(r) for r in args.runs]
    missing = [r for r in runs if not (r / "plan.json").is_file()]
    if missing:
        from ditsr_plan.runtime.analysis.status import not_a_run

        raise UsageError("; ".join(not_a_run(r) for r in missing))
    try:
        rows = [summarise(r) for r in runs]
    except RunFailure as exc:
        raise UsageError(str(exc)) from None
    for warning in eval_settings_differ(rows):
        print(warning, file=sys.stderr)
    if args.format == "json":
        write_json(json_safe(rows))  # strict JSON: "nan", "inf" as eval.jsonl writes them
    else:
        sys.stdout.write(table(rows, markdown=args.format == "markdown"))
    if args.plot:
        try:
            side_by_side(runs, Path(args.plot))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        out.info(f"wrote {args.plot}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.runtime.analysis.report import write_report

    run_dir = Path(args.run)
    if not (run_dir / "plan.json").is_file():
        from ditsr_plan.runtime.analysis.status import not_a_run

        raise UsageError(not_a_run(run_dir))
    from ditsr_plan.runtime.errors import RunFailure

    try:
        print(f"wrote {write_report(run_dir, Path(args.output) if args.output else None)}")
    except RunFailure as exc:  # a plan.json cut short, of another version or edited
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # a plan.json of another version of the tool
        raise UsageError(f"{run_dir}: {exc}") from None
    return EXIT_OK


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.runtime.errors import RunFailure
    from ditsr_plan.runtime.run.export import export_merged

    target = Path(args.merge)
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists and is not empty")
    try:
        export_merged(
            Path(args.run), target, ema=not args.no_ema, note=lambda line: print(f"note: {line}", file=sys.stderr)
        )
    except RunFailure as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {target}")
    return EXIT_OK


def _degradation_of(plan: str | None, overrides: Sequence[str] = ()) -> tuple[DegradeSettings, int | None]:
    """The degrade block of ``plan`` with its ``--set`` overrides (and the plan's data scale); without a plan
    the reference's highorder degradation."""
    from ditsr_plan.settings.schemas import HighorderDegrade

    if plan is None:
        if overrides:
            raise UsageError("pack make: --set changes the settings of a plan: give the plan with --plan")
        return HighorderDegrade(), None
    from ditsr_plan.compiler import compile_plan

    graph = compile_plan(plan, overrides=overrides)
    return graph.block("degrade"), graph.block("data").scale


def cmd_pack(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.runtime.validate.packs import PackError, make_pack
    from ditsr_plan.settings.schemas import kind_of
    from ditsr_plan.terminal import shown

    for name in ("n", "size", "scale", "max_pixels"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"pack make: --{name.replace('_', '-')} must be at least 1")
    degradation, plan_scale = _degradation_of(args.plan, args.overrides)
    scale = args.scale if args.scale is not None else plan_scale or 4
    try:
        manifest = make_pack(
            Path(args.hr_dir),
            Path(args.out),
            degradation,
            args.n,
            args.size,
            scale,
            args.seed,
            progress=out.info,
            strict=args.strict,
            max_pixels=args.max_pixels,
        )
    except PackError as exc:
        raise UsageError(str(exc)) from None
    note = (
        f" (the folder holds {manifest['n']} usable images, fewer than --n {args.n})" if manifest["n"] < args.n else ""
    )
    if manifest["skipped"]:
        note += f"; {len(manifest['skipped'])} unusable images skipped (manifest.json 'skipped'; --strict refuses them)"
    out.info(
        f"wrote {shown(args.out)}: {manifest['n']} GT {args.size} px / LR {args.size // scale} px pairs, "
        f"{kind_of('degrade', degradation)} degradation, seed {args.seed}{note}"
    )
    return EXIT_OK


def _eval_settings(run_dir: Path, steps: int | None, lq_init: float | None, pack_input: str | None = None) -> Eval:
    """The run's eval settings (the defaults when its plan has no eval), with --steps / --lq-init /
    --pack-input."""
    from ditsr_plan.runtime.analysis.status import read_graph
    from ditsr_plan.settings.schemas import Eval
    from ditsr_plan.settings.timesteps import below_t_min

    graph = read_graph(run_dir)
    settings = graph.block("eval") or Eval()
    if steps is not None:
        if steps < 1:
            raise UsageError("evaluate: --steps must be at least 1")
        settings = settings.model_copy(update={"steps": steps})
    if lq_init is not None:
        if not 0 <= lq_init <= 1:
            raise UsageError("evaluate: --lq-init is a fraction of the schedule, in [0, 1]")
        settings = settings.model_copy(update={"lq_init": lq_init})
    if pack_input is not None:
        settings = settings.model_copy(update={"pack_input": pack_input})
    if settings.steps > graph.block("diffusion").train_steps:
        raise UsageError(f"evaluate: --steps {settings.steps}: the run's diffusion has fewer timesteps")
    untrained = below_t_min(settings, graph.block("diffusion"))
    if untrained:  # told, not refused: the user may want to see what the model does there
        _warn(f"warning: the {untrained}; expect poor metrics")
    return settings


def _metrics_table(result, markdown: bool) -> str:
    from ditsr_plan.runtime.records import eval_metric_columns

    columns = eval_metric_columns(result.mean)
    rows = [("mean", result.mean), ("bicubic (mean)", result.bicubic["mean"])]
    rows += [(name, result.images[name]) for name in sorted(result.images)]
    rows += [(f"{name} (bicubic)", result.bicubic[name]) for name in sorted(result.images)]

    def cell(value) -> str:
        if value is None:
            return "-"
        if not math.isfinite(value):
            return f"{value}!"  # nan!, inf!: not finite, marked
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"

    table = [["image", *columns]] + [[name, *(cell(m.get(c)) for c in columns)] for name, m in rows]
    if markdown:
        lines = ["| " + " | ".join(table[0]) + " |", "|" + " --- |" * len(table[0])]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in table[1:]]) + "\n"
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "".join(
        "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip() + "\n"
        for r in table
    )


def _warn(line: str) -> None:
    print(f"ditsr-plan evaluate: {line}", file=sys.stderr)


def cmd_evaluate(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.runtime.errors import RunFailure
    from ditsr_plan.runtime.records import strict_json
    from ditsr_plan.runtime.run.evaluate import evaluate_checkpoint, find_checkpoint

    target = Path(args.target)
    if args.limit is not None and args.limit < 1:
        raise UsageError("evaluate: --limit must be at least 1")
    try:
        skipped: list[str] = []

        def report(line: str) -> None:
            skipped.append(line)
            _warn(line)

        ckpt, run_dir = find_checkpoint(target, report=report)
        if skipped:
            _warn(f"scoring {ckpt.path} (step {ckpt.step}), the newest usable checkpoint")
        settings = _eval_settings(run_dir, args.steps, args.lq_init, args.pack_input)
        folder = Path(args.out) if args.out else run_dir / "evaluate" / f"{Path(args.pack).name}-step-{ckpt.step:08d}"
        result = evaluate_checkpoint(
            ckpt, run_dir, Path(args.pack), settings, not args.no_ema, args.device, args.limit, folder, out.info
        )
    except RunFailure as exc:
        raise UsageError(str(exc)) from None
    if result.not_finite:
        _warn(
            f"the generator gave NaN or infinite values on {len(result.not_finite)} of {len(result.images)} images "
            f"({', '.join(result.not_finite[:5])}): their metrics are marked nan, and so is the mean"
        )
    if args.format == "json":
        sys.stdout.write(strict_json(result.to_json(), indent=2) + "\n")
    else:
        weights = "EMA" if result.ema else "trained weights"
        print(
            f"{result.checkpoint} (step {result.step}, {weights}) on {result.pack}: {len(result.images)} images, "
            f"DDIM {settings.steps} steps, lq_init {settings.lq_init:g}"
            + ("" if result.lpips else "; LPIPS unavailable (pretrained AlexNet not cached)")
        )
        sys.stdout.write(_metrics_table(result, markdown=args.format == "markdown"))
        print(f"worst -> best by PSNR: {', '.join(result.worst_to_best)}")
    out.info(f"wrote {folder}/ (sr/, worst-best.png, results.json)")
    return EXIT_OK
