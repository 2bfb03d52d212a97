"""The commands on runs: run, matrix, compare, report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ditsr_plan.diagnostics import PlanError

from .output import Output, write_json
from .plans import EXIT_OK, UsageError


def cmd_run(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.runtime.errors import RunFailure
    from ditsr_plan.runtime.run import RunInterrupted, launch

    try:
        launch(args.plan, args.out, args.time_scale, args.overrides, args.resume, args.force, args.overwrite, out.quiet)
    except RunFailure as exc:
        raise UsageError(str(exc)) from None
    except RunInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 speaks for the run
            sys.stderr.write(f"ditsr-plan run: {exc}\n")
        return 128 + exc.signum
    return EXIT_OK


def cmd_matrix(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler import compile_plan

    graphs, errors = [], []
    for plan in args.plans:
        try:
            graphs.append(compile_plan(plan, args.time_scale, overrides=args.overrides))
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

    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not (r / "plan.json").is_file()]
    if missing:
        raise UsageError(f"not run folders (no plan.json): {', '.join(missing)}")
    rows = [summarise(r) for r in runs]
    for warning in eval_settings_differ(rows):
        print(warning, file=sys.stderr)
    if args.format == "json":
        write_json(rows)
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
        raise UsageError(f"{run_dir} is not a run folder (no plan.json)")
    try:
        print(f"wrote {write_report(run_dir, Path(args.output) if args.output else None)}")
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
        export_merged(Path(args.run), target, ema=not args.no_ema)
    except RunFailure as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {target}")
    return EXIT_OK
