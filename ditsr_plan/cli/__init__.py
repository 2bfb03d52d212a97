"""The ``ditsr-plan`` command line.

Exit codes: 0 success; 1 findings (``lint``), differences (``diff``) or unformatted files (``fmt --check``,
``--diff``); 2 bad input (a plan error, a usage error, a run that cannot start or go on) or an internal
error; 128 + N after signal N (a run stopped by SIGINT/SIGTERM, 130/143, after writing a checkpoint; 141
when the reader of standard output went away). Bad input is reported as ``file:line:col: error:
message`` with the source line, a caret and a hint -- never a traceback (set ``DITSR_PLAN_DEBUG=1`` to
see one).
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import sys
from collections.abc import Sequence

from ditsr_plan.diagnostics import PlanError
from ditsr_plan.terminal import printable

from . import plans, runs, setup, upscale
from .arguments import PLAN_COMMANDS, build_parser
from .output import Output, use_color
from .plans import EXIT_FINDINGS, EXIT_OK, UsageError

EXIT_ERROR = 2
EXIT_CLOSED_STDOUT = 141  # 128 + SIGPIPE, what a tool killed by the closed pipe exits with

COMMANDS = {
    "compile": plans.cmd_compile,
    "show": plans.cmd_show,
    "lint": plans.cmd_lint,
    "rules": plans.cmd_rules,
    "diff": plans.cmd_diff,
    "fmt": plans.cmd_fmt,
    "run": runs.cmd_run,
    "matrix": runs.cmd_matrix,
    "compare": runs.cmd_compare,
    "report": runs.cmd_report,
    "export": runs.cmd_export,
    "pack": runs.cmd_pack,
    "evaluate": runs.cmd_evaluate,
    "check": setup.cmd_check,
    "tiny-models": setup.cmd_tiny_models,
    "upscale": upscale.cmd_upscale,
}

_INTERRUPTED = {
    "run": " before the run started: nothing was written",
    "pack": ": no pack was written",
    "upscale": ": the images written so far are whole (each is renamed into place when complete)",
}

__all__ = ["EXIT_ERROR", "EXIT_FINDINGS", "EXIT_OK", "UsageError", "build_parser", "main"]


def _closed_stdout() -> int:
    """The reader of our standard output went away (``ditsr-plan show PLAN | head -1``): not an error.
    Stop writing quietly; point stdout at /dev/null so that the interpreter's final flush is quiet too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_CLOSED_STDOUT


def _describe_os_error(exc: OSError) -> str:
    """``No such file or directory: 'x.plan'`` when the OS said both; else what the error says."""
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: '{exc.filename}'"
    return str(exc) or exc.strerror or type(exc).__name__


def _set_syntax(items: Sequence[str] | None) -> None:
    """``--set`` items of the wrong shape, refused before anything heavy is imported (the keys themselves are
    checked when the plan is compiled, still before torch)."""
    for item in items or ():
        if not re.fullmatch(r"[A-Za-z_]\w*\.[A-Za-z_]\w*=.*", item):
            raise UsageError(f"--set '{item}': expected NAME.KEY=VALUE, e.g. --set run.seed=3 or --set model.path=DIR")


def _short_lived() -> None:
    """Garbage collection for a process that ends in a fraction of a second (a plan command run as the program:
    the console script, ``python -m ditsr_plan``). Its heap is mostly the module-level objects of pydantic and
    lark (~40k), which the cyclic collector walks over and over for nothing: its young-generation passes while
    they are imported, and at exit one last pass over the whole heap, after which the interpreter frees every
    object anyway. Together ~40 ms of a cold ``lint plans/`` of 0.25 s (bench/README.md). So the collector is
    off (what these commands make has next to no reference cycles; reference counting frees it all the same),
    and the heap is frozen at exit (gc.freeze, the last atexit call), which the last pass skips. Nothing is left
    unflushed or unclosed: the commands close what they open, the standard streams are flushed after the
    atexit calls. Called from Python (tests: ``main([...])``), main leaves the collector alone.

    Also pydantic's plugins are off (its documented ``PYDANTIC_DISABLE_PLUGINS``, unless the environment sets
    it): else the first schema that validates reads the entry points of every installed distribution to find
    plugins (hooks that watch validations, none of which a plan command wants), ~5 ms here."""
    gc.disable()
    atexit.register(gc.freeze)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(words[0] if words else None).parse_args(argv)
    if argv is None and args.command in PLAN_COMMANDS:  # the commands that answer at once
        _short_lived()
    out = Output(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
    debug = bool(os.environ.get("DITSR_PLAN_DEBUG"))
    try:
        _set_syntax(getattr(args, "overrides", None))
        return COMMANDS[args.command](args, out)
    except PlanError as exc:
        sys.stderr.write(exc.render(color=use_color()) + "\n")
        return EXIT_ERROR
    except UsageError as exc:
        sys.stderr.write(f"ditsr-plan {args.command}: error: {printable(str(exc))}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        return _closed_stdout()
    except OSError as exc:
        if debug:
            raise
        sys.stderr.write(f"ditsr-plan {args.command}: error: {printable(_describe_os_error(exc))}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        # a run or matrix that had started says what it left itself (RunInterrupted); reaching here, the
        # command was still loading or working in place: pack make and evaluate leave nothing half-written
        sys.stderr.write(
            f"\nditsr-plan {args.command}: interrupted (Ctrl-C)" + _INTERRUPTED.get(args.command, "") + "\n"
        )
        return 130
    except Exception as exc:
        if debug:
            raise
        sys.stderr.write(
            f"ditsr-plan {args.command}: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in ditsr-plan; rerun with DITSR_PLAN_DEBUG=1 for details and report it.\n"
        )
        return EXIT_ERROR
