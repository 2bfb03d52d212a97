"""The ``ditsr-plan`` command line.

Exit codes: 0 success; 1 findings (``lint``), differences (``diff``) or unformatted files
(``fmt --check``); 2 bad input (a plan error, a usage error) or an internal error. Bad input is
reported as ``file:line:col: error: message`` with the source line, a caret and a hint -- never a
traceback (set ``DITSR_PLAN_DEBUG=1`` to see one for internal errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ditsr_plan import __version__
from ditsr_plan.diagnostics import PlanError

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """A command-line mistake: reported in one line, exit code 2."""


def _time_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"time scale must be a positive number, not {text}")
    return value


def _step(text: str) -> int:
    from ditsr_plan.dsl.numbers import NumberError, parse_steps

    try:
        return parse_steps(text)
    except NumberError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _codes(text: str) -> list[str]:
    return [c.strip().upper() for c in text.split(",") if c.strip()]


def _add_time_scale(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--time-scale",
        type=_time_scale,
        default=1.0,
        metavar="F",
        help="multiply every step quantity by F (rounded to whole steps), keeping the shape",
    )


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="override a setting of a block or a term, validated like the file (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditsr-plan",
        description="Plan files for diffusion-transformer super-resolution training: compile, show, lint, "
        "diff and format loss schedules.",
    )
    parser.add_argument("--version", action="version", version=f"ditsr-plan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compile", help="compile a plan to its schedule graph (JSON)")
    p.add_argument("plan")
    _add_time_scale(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the JSON here instead of standard output")

    p = sub.add_parser("show", help="a table of stages and knobs, or the values at one step")
    p.add_argument("plan")
    _add_time_scale(p)
    p.add_argument("--at", type=_step, metavar="STEP", help="the values at this step (3000, 3k, 1.5k)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--plot", metavar="FILE.png", help="also draw every weight over the steps, stages as bands")

    p = sub.add_parser("lint", help="find the schedule mistakes of the loss notes")
    p.add_argument("paths", nargs="+", metavar="PLAN|DIR")
    _add_time_scale(p)
    p.add_argument("--format", choices=("text", "json", "github", "sarif"), default="text")
    p.add_argument(
        "--select",
        type=_codes,
        default=None,
        metavar="CODES",
        help="only these rules (codes or prefixes, comma-separated: G,W001)",
    )
    p.add_argument("--ignore", type=_codes, default=None, metavar="CODES", help="skip these rules")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="CODE.NAME=VALUE",
        help="change a rule's threshold, e.g. G001.max=0.08 (see 'ditsr-plan rules')",
    )

    sub.add_parser("rules", help="every lint rule with its documentation")

    p = sub.add_parser("diff", help="what changes in training between two plans")
    p.add_argument("a")
    p.add_argument("b")
    _add_time_scale(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the knobs that differ (a solid, b dashed)")

    p = sub.add_parser("run", help="train a plan (CUDA when present, CPU otherwise)")
    p.add_argument("plan")
    _add_time_scale(p)
    p.add_argument("--out", metavar="DIR", help="run folder (default: run out=..., else runs/<plan>-<time>)")
    _add_set(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint (of --out, else the newest runs/<plan>-*)",
    )
    p.add_argument("--force", action="store_true", help="resume even if the plan's hash changed")
    p.add_argument("--overwrite", action="store_true", help="start again in a run folder that is not empty")

    p = sub.add_parser("matrix", help="run several plans one after another (skips finished runs, resumes one)")
    p.add_argument("plans", nargs="+", metavar="PLAN")
    _add_time_scale(p)
    p.add_argument("--out", metavar="DIR", default=os.path.join("runs", "matrix"), help="default: runs/matrix")
    _add_set(p)
    p.add_argument("--overwrite", action="store_true", help="run every plan again from step 0")

    p = sub.add_parser("compare", help="final and best validation metrics of runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    p.add_argument("--plot", metavar="FILE.png", help="the validation images of every run side by side")

    p = sub.add_parser("report", help="write a run's self-contained HTML report")
    p.add_argument("run", metavar="RUN")
    p.add_argument("-o", "--output", metavar="FILE.html", help="default: RUN/report.html")

    p = sub.add_parser("fmt", help="rewrite plans in the canonical format")
    p.add_argument("paths", nargs="+", metavar="PLAN|DIR")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not formatted")
    return parser


def _write_json(data: object, path: str | None = None) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


def cmd_compile(args: argparse.Namespace) -> int:
    from ditsr_plan.compiler import compile_plan

    graph = compile_plan(args.plan, args.time_scale)
    _write_json(graph.to_json(), args.output)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from ditsr_plan.compiler import compile_plan, show

    graph = compile_plan(args.plan, args.time_scale)
    if args.at is not None and args.at >= graph.total_steps:
        raise UsageError(f"--at {args.at}: the plan has steps 0..{graph.total_steps - 1}")
    if args.format == "json":
        _write_json(show.at_json(graph, args.at) if args.at is not None else show.table_json(graph))
    else:
        print(show.at_text(graph, args.at) if args.at is not None else show.table_text(graph))
    if args.plot:
        from ditsr_plan.compiler.plot import plot_schedule

        plot_schedule(graph, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return EXIT_OK


def _params(items: Sequence[str]) -> dict[str, dict[str, float]]:
    from ditsr_plan.compiler.lint.rules import BY_CODE

    out: dict[str, dict[str, float]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        code, dot, name = key.partition(".")
        rule = BY_CODE.get(code.upper())
        if not sep or not dot or rule is None or name not in rule.params:
            known = ", ".join(f"{c}.{n}" for c, r in BY_CODE.items() for n in r.params)
            raise UsageError(f"--param {item}: expected CODE.NAME=VALUE with one of: {known}")
        try:
            out.setdefault(code.upper(), {})[name] = float(value)
        except ValueError:
            raise UsageError(f"--param {item}: '{value}' is not a number") from None
    return out


def cmd_lint(args: argparse.Namespace) -> int:
    from ditsr_plan.compiler.lint import lint_paths, unknown_codes
    from ditsr_plan.compiler.lint.report import report

    for codes in (args.select or [], args.ignore or []):
        bad = unknown_codes(codes)
        if bad:
            raise UsageError(f"unknown rule code {', '.join(bad)} (see 'ditsr-plan rules')")
    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    result = lint_paths(args.paths, args.select, args.ignore, _params(args.param), args.time_scale)
    sys.stdout.write(report(result, args.format))
    return EXIT_FINDINGS if result.findings else EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    from ditsr_plan.compiler.lint.report import rules_text

    sys.stdout.write(rules_text())
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.compiler.diff import diff_graphs, render_text, to_json

    errors = []
    graphs = []
    for path in (args.a, args.b):
        try:
            graphs.append(compile_plan(path, args.time_scale))
        except PlanError as exc:
            errors.append(exc)
    if errors:
        raise PlanError.merge(errors)
    d = diff_graphs(*graphs)
    if args.format == "json":
        _write_json(to_json(d))
    else:
        print(render_text(d))
    if args.plot:
        from ditsr_plan.compiler.plot import plot_diff

        plot_diff(d.a, d.b, list(d.knobs) or list(d.a.terms), args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return EXIT_OK if d.same else EXIT_FINDINGS


def cmd_fmt(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ditsr_plan.compiler.lint import plan_files
    from ditsr_plan.dsl.formatter import format_plan
    from ditsr_plan.dsl.parser import parse_plan

    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    errors: list[PlanError] = []
    changed = []
    for path in plan_files(args.paths):
        text = Path(path).read_text(encoding="utf-8")
        try:
            formatted = format_plan(parse_plan(text, path))
        except PlanError as exc:
            errors.append(exc)
            continue
        if formatted != text:
            changed.append(path)
            if not args.check:
                Path(path).write_text(formatted, encoding="utf-8")
    for path in changed:
        print(f"{'would reformat' if args.check else 'reformatted'} {path}")
    if errors:
        raise PlanError.merge(errors)
    return EXIT_FINDINGS if args.check and changed else EXIT_OK


def _run_dir(args: argparse.Namespace, graph) -> str:
    import time
    from pathlib import Path

    if args.out:
        return args.out
    if graph.blocks["run"].values.get("out"):
        return graph.blocks["run"].values["out"]
    if args.resume:
        previous = sorted(Path("runs").glob(f"{graph.name}-*"), key=lambda p: p.stat().st_mtime)
        if not previous:
            raise UsageError(f"--resume: no runs/{graph.name}-* folder here; name the run folder with --out")
        return str(previous[-1])
    return os.path.join("runs", f"{graph.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ditsr_plan.compiler import compile_plan

    graph = compile_plan(args.plan, args.time_scale, overrides=args.overrides)
    run_dir = Path(_run_dir(args, graph))
    from ditsr_plan.runtime.run import RunInterrupted, run_plan

    try:
        run_plan(graph, run_dir, resume=args.resume, force=args.force, overwrite=args.overwrite)
    except _run_errors() as exc:
        raise UsageError(str(exc)) from None
    except RunInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 speaks for the run
            sys.stderr.write(f"ditsr-plan run: {exc}\n")
        return 128 + exc.signum
    return EXIT_OK


def _run_errors():
    from ditsr_plan.runtime.checkpoint import CheckpointError
    from ditsr_plan.runtime.data import DataError
    from ditsr_plan.runtime.device import DeviceError
    from ditsr_plan.runtime.distributed import DistributedError
    from ditsr_plan.runtime.run import RunError
    from ditsr_plan.runtime.terms import TermSetupError
    from ditsr_plan.runtime.trainer import TermCheckError

    return (RunError, DataError, DeviceError, TermSetupError, TermCheckError, CheckpointError, DistributedError)


def cmd_matrix(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ditsr_plan.compiler import compile_plan

    graphs, errors = [], []
    for plan in args.plans:
        try:
            graphs.append(compile_plan(plan, args.time_scale, overrides=args.overrides))
        except PlanError as exc:
            errors.append(exc)
    if errors:
        raise PlanError.merge(errors)
    from ditsr_plan.runtime.matrix import run_matrix

    try:
        folders = run_matrix(graphs, Path(args.out), args.overwrite)
    except _run_errors() as exc:
        raise UsageError(str(exc)) from None
    print("compare them: ditsr-plan compare " + " ".join(str(f) for f in folders))
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ditsr_plan.runtime.compare import side_by_side, summarise, table

    runs = [Path(r) for r in args.runs]
    missing = [str(r) for r in runs if not (r / "plan.json").is_file()]
    if missing:
        raise UsageError(f"not run folders (no plan.json): {', '.join(missing)}")
    rows = [summarise(r) for r in runs]
    if args.format == "json":
        _write_json(rows)
    else:
        sys.stdout.write(table(rows, markdown=args.format == "markdown"))
    if args.plot:
        try:
            side_by_side(runs, Path(args.plot))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"wrote {args.plot}", file=sys.stderr)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ditsr_plan.runtime.report import write_report

    run_dir = Path(args.run)
    if not (run_dir / "plan.json").is_file():
        raise UsageError(f"{run_dir} is not a run folder (no plan.json)")
    try:
        print(f"wrote {write_report(run_dir, Path(args.output) if args.output else None)}")
    except ValueError as exc:  # a plan.json of another version of the tool
        raise UsageError(f"{run_dir}: {exc}") from None
    return EXIT_OK


COMMANDS = {
    "compile": cmd_compile,
    "show": cmd_show,
    "lint": cmd_lint,
    "rules": cmd_rules,
    "diff": cmd_diff,
    "fmt": cmd_fmt,
    "run": cmd_run,
    "report": cmd_report,
    "matrix": cmd_matrix,
    "compare": cmd_compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PlanError as exc:
        sys.stderr.write(exc.render() + "\n")
        return EXIT_ERROR
    except UsageError as exc:
        sys.stderr.write(f"ditsr-plan {args.command}: error: {exc}\n")
        return EXIT_ERROR
    except OSError as exc:
        sys.stderr.write(f"ditsr-plan {args.command}: error: {exc.strerror}: {exc.filename}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("DITSR_PLAN_DEBUG"):
            raise
        sys.stderr.write(
            f"ditsr-plan {args.command}: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in ditsr-plan; rerun with DITSR_PLAN_DEBUG=1 for details and report it.\n"
        )
        return EXIT_ERROR
