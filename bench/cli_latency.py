"""Wall time of the commands that must answer instantly: ``lint plans/`` and ``compile plans/v10.plan``, and
the time from pressing enter to the first line of ``run`` (the plan's name, hash and steps, printed before
torch is imported; target under 2 s on the 2-core machine; the process is then stopped).

Runs each command as a user would (a fresh process of the installed console script), several times,
and prints the median and the spread, side by side: "cold" with the compile cache off (every plan is
parsed and validated: lark and pydantic are imported) and "cached" with a warm compile cache in a
temporary folder (unchanged plans are read back). Targets (issue 20): cold ``lint plans/`` under 0.3 s,
cached under 0.12 s.

Beside the wall time it prints the process's CPU time (user + system, median): on a machine shared with
other jobs the wall time grows with the load, the CPU time much less, so it is the better estimate of
the wall time on an idle machine (the process is single-threaded).

``--pyc`` lets Python write and read bytecode for ditsr_plan's own modules (a normal install has it;
a checkout run with PYTHONDONTWRITEBYTECODE=1 compiles every module from source on every start).

``--against DIR`` times another checkout (its ``ditsr_plan`` and ``plans/``; e.g. ``git archive REV | tar -x -C DIR``)
side by side, its runs taking turns with this checkout's, so that both see the same load.

    python bench/cli_latency.py [--runs 15] [--pyc] [--only lint] [--against DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "lint plans/": ["lint", "plans"],
    "compile plans/v10.plan": ["compile", "plans/v10.plan", "-o", "/dev/null"],
    "show plans/v10.plan --at 11k": ["show", "plans/v10.plan", "--at", "11k"],
    "python -c pass (interpreter start, for reference)": None,
}
FIRST_LINE = {"run: first line": ["run", "plans/demo.plan"]}


def _time(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, float]:
    """(wall, cpu) seconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _first_line(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> float:
    """Seconds until the command's first line on standard error; the command is stopped then."""
    with tempfile.TemporaryDirectory(prefix="ditsr-plan-bench-run-") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*argv, "--out", out], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert proc.stderr is not None
        proc.stderr.readline()
        seconds = time.perf_counter() - start
        proc.kill()
        proc.wait()
    return seconds


def _row(label: str, runs: list[tuple[float, float]]) -> str:
    times = [wall for wall, _ in runs]
    cpu = statistics.median(c for _, c in runs)
    return f"{label:<60} {statistics.median(times):>7.3f}s {min(times):>7.3f}s {max(times):>7.3f}s {cpu:>7.3f}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--pyc", action="store_true", help="with bytecode for ditsr_plan (as an installed copy)")
    parser.add_argument("--only", help="only the commands whose label starts with this")
    parser.add_argument("--against", type=Path, metavar="DIR", help="also time this other checkout, side by side")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not (args.pyc and k == "PYTHONDONTWRITEBYTECODE")}
    exe = shutil.which("ditsr-plan") or str(Path(sys.executable).with_name("ditsr-plan"))
    trees = {"": ROOT}
    if args.against:
        trees = {"": ROOT, " (--against)": args.against.resolve()}
    caches = {tree: tempfile.mkdtemp(prefix="ditsr-plan-bench-") for tree in trees.values()}

    def env(mode: str, tree: Path) -> dict[str, str]:
        checkout = {"PYTHONPATH": str(tree)} if args.against else {}
        if mode == "cold":
            return {**base, **checkout, "DITSR_PLAN_NO_CACHE": "1"}
        return {**base, **checkout, "DITSR_PLAN_CACHE_DIR": caches[tree], "DITSR_PLAN_NO_CACHE": "0"}

    print(f"{'command':<60} {'median':>8} {'min':>8} {'max':>8} {'cpu':>8}   ({args.runs} runs each)")
    for label, cmd in COMMANDS.items():
        if args.only and not label.startswith(args.only) and cmd is not None:
            continue
        if cmd is None:
            _time([sys.executable, "-c", "pass"], base)
            print(_row(label, [_time([sys.executable, "-c", "pass"], base) for _ in range(args.runs)]))
            continue
        for mode in ("cold", "cached"):
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for i in range(args.runs + 1):  # the first round warms the OS file cache, the grammar's parse
                for name, tree in trees.items():  # tables and (cached mode) the compile cache
                    timed = _time([exe, *cmd], env(mode, tree), tree)
                    if i:
                        runs[name].append(timed)
            for name in trees:
                print(_row(f"{label} {mode}{name}", runs[name]))
    for label, cmd in FIRST_LINE.items():
        for mode in ("cold", "cached"):
            for name, tree in trees.items():
                _first_line([exe, *cmd], env(mode, tree), tree)
                times = [_first_line([exe, *cmd], env(mode, tree), tree) for _ in range(args.runs)]
                med, lo, hi = statistics.median(times), min(times), max(times)
                print(f"{label + ' ' + mode + name:<60} {med:>7.3f}s {lo:>7.3f}s {hi:>7.3f}s")
    for cache in caches.values():
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
