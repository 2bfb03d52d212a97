"""The commands on plans: compile, show, lint, rules, diff, fmt. None of them imports torch (but
``show --params``, which builds the generator on the meta device)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ditsr_plan.diagnostics import SET_FILE, PlanError

from .output import STDIN, STDIN_NAME, Output, plan_source, use_color, write_json

EXIT_OK, EXIT_FINDINGS = 0, 1
EXIT_BAD_SET = 2  # lint: an error in a --set (bad input on the command line)


class UsageError(Exception):
    """A command-line mistake: reported in one line, exit code 2."""


def _graph(path: str, time_scale: float, overrides: Sequence[str] = ()):
    from ditsr_plan.compiler import compile_plan, load_graph

    name, text = plan_source(path)
    if text is not None or overrides:
        if overrides and (os.path.isdir(name) or name.lower().endswith(".json")):
            raise UsageError(f"--set changes a plan's settings: {name} is a compiled graph or a run, not a plan")
        return compile_plan(name, time_scale, text=text, overrides=overrides)
    return load_graph(name, time_scale)


def cmd_compile(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler import compile_plan

    name, text = plan_source(args.plan)
    graph = compile_plan(name, args.time_scale, text=text, overrides=args.overrides)
    write_json(graph.to_json(), args.output)
    if args.output:
        out.info(f"wrote {args.output}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler import show

    graph = _graph(args.plan, args.time_scale, args.overrides)
    if args.at is not None and args.at >= graph.total_steps:
        raise UsageError(f"--at {args.at}: the plan has steps 0..{graph.total_steps - 1}")
    if args.params:
        return _show_params(graph, args)
    if args.format == "json":
        write_json(show.at_json(graph, args.at) if args.at is not None else show.table_json(graph))
    else:
        print(show.at_text(graph, args.at) if args.at is not None else show.table_text(graph))
    if args.plot:
        from ditsr_plan.compiler.plot import plot_schedule

        plot_schedule(graph, args.plot)
        out.info(f"wrote {args.plot}")
    return EXIT_OK


def _show_params(graph, args: argparse.Namespace) -> int:
    if args.at is not None or args.plot:
        raise UsageError("--params counts the generator: it takes neither --at nor --plot")
    from ditsr_plan.runtime.errors import RunFailure
    from ditsr_plan.runtime.train.generators.census import census, census_text

    try:
        result = census(graph)
    except RunFailure as exc:
        raise UsageError(str(exc)) from None
    if args.format == "json":
        write_json(result)
    else:
        print(census_text(result))
    return EXIT_OK


def _params(items: Sequence[str]) -> dict[str, dict[str, float]]:
    if not items:
        return {}
    from ditsr_plan.compiler.lint.rules import BY_CODE

    params: dict[str, dict[str, float]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        code, dot, name = key.partition(".")
        rule = BY_CODE.get(code.upper())
        if not sep or not dot or rule is None or name not in rule.params:
            known = ", ".join(f"{c}.{n}" for c, r in BY_CODE.items() for n in r.params)
            raise UsageError(f"--param {item}: expected CODE.NAME=VALUE with one of: {known}")
        try:
            params.setdefault(code.upper(), {})[name] = float(value)
        except ValueError:
            raise UsageError(f"--param {item}: '{value}' is not a number") from None
    return params


def _existing(paths: Sequence[str]) -> None:
    missing = [p for p in paths if p != STDIN and not os.path.exists(p)]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")


def cmd_lint(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler.lint import NoPlansError, lint_paths, unknown_codes
    from ditsr_plan.compiler.lint.report import report

    for codes in (args.select or [], args.ignore or []):
        bad = unknown_codes(codes)
        if bad:
            raise UsageError(f"unknown rule code {', '.join(bad)} (see 'ditsr-plan rules')")
    _existing(args.paths)
    texts = {STDIN_NAME: sys.stdin.read()} if STDIN in args.paths else {}
    paths = [STDIN_NAME if p == STDIN else p for p in args.paths]
    try:
        result = lint_paths(
            paths, args.select, args.ignore, _params(args.param), args.time_scale, texts, args.overrides
        )
    except NoPlansError as exc:
        raise UsageError(str(exc)) from None
    for path in result.files:
        out.detail(f"checked {path}")
    color = args.format == "text" and use_color(sys.stdout)
    sys.stdout.write(report(result, args.format, color=color, summary=not out.quiet))
    if any(d.severity == "error" and d.pos is not None and d.pos.file == SET_FILE for d in result.findings):
        return EXIT_BAD_SET  # the command line is wrong, not the plan: as show, check and run answer it
    return EXIT_FINDINGS if result.findings else EXIT_OK


def cmd_rules(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler.lint import unknown_codes
    from ditsr_plan.compiler.lint.report import rules_text

    bad = unknown_codes(args.codes)
    if bad:
        raise UsageError(f"unknown rule code {', '.join(bad)} (see 'ditsr-plan rules')")
    sys.stdout.write(rules_text(args.codes))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler.diff import diff_graphs, render_text, to_json

    errors, graphs = [], []
    for path in (args.a, args.b):
        try:
            graphs.append(_graph(path, args.time_scale, args.overrides))
        except PlanError as exc:
            errors.append(exc)
    if errors:
        raise PlanError.merge(errors)
    d = diff_graphs(*graphs)
    if args.format == "json":
        write_json(to_json(d))
    else:
        print(render_text(d, (args.a, args.b)))
    if args.plot:
        from ditsr_plan.compiler.plot import plot_diff

        plot_diff(d.a, d.b, list(d.knobs) or list(d.a.terms), args.plot)
        out.info(f"wrote {args.plot}")
    return EXIT_OK if d.same else EXIT_FINDINGS


def formatted(text: str, path: str) -> str:
    """The canonical form of a plan's text, keeping what the file's bytes carry beyond the plan: a UTF-8
    byte-order mark and CRLF line endings stay as they were."""
    from ditsr_plan.dsl.formatter import format_plan
    from ditsr_plan.dsl.parser import parse_plan

    bom = "\ufeff" if text.startswith("\ufeff") else ""
    crlf = "\r\n" in text
    body = text.removeprefix("\ufeff").replace("\r\n", "\n")
    canonical = format_plan(parse_plan(body, path))
    return bom + (canonical.replace("\n", "\r\n") if crlf else canonical)


def cmd_fmt(args: argparse.Namespace, out: Output) -> int:
    from ditsr_plan.compiler.lint import NoPlansError, plan_files

    if args.paths == [STDIN]:  # a filter: stdin to stdout
        sys.stdout.write(formatted(sys.stdin.read(), STDIN_NAME))
        return EXIT_OK
    _existing(args.paths)
    try:
        files = plan_files(args.paths)
    except NoPlansError as exc:
        raise UsageError(str(exc)) from None
    errors: list[PlanError] = []
    changed = []
    for path in files:
        with open(path, encoding="utf-8", newline="") as fh:  # newline="": CRLF stays visible
            text = fh.read()
        try:
            result = formatted(text, path)
        except PlanError as exc:
            errors.append(exc)
            continue
        if result == text:
            out.detail(f"unchanged {path}")
            continue
        changed.append(path)
        if args.diff:
            import difflib  # here: the other plan commands do not need it

            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(keepends=True), result.splitlines(keepends=True), path, f"{path} (formatted)"
                )
            )
        elif not args.check:
            with open(path, "w", encoding="utf-8", newline="") as fh:
                fh.write(result)
    if not args.diff and not out.quiet:
        for path in changed:
            print(f"{'would reformat' if args.check else 'reformatted'} {path}")
    if errors:
        raise PlanError.merge(errors)
    return EXIT_FINDINGS if (args.check or args.diff) and changed else EXIT_OK
