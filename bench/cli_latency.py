"""Wall time of the commands that must answer instantly: ``lint plans/`` and ``compile plans/v10.plan``, and
the time from pressing enter to the first line of ``run`` (the plan's name, hash and steps, printed before
torch is imported; target under 2 s on the 2-core machine; the process is then stopped).

Runs each command as a user would (a fresh process of the installed console script), several times,
and prints the median and the spread, side by side: "cold" with the compile cache off (every plan is
parsed and validated: lark and pydantic are imported) and "cached" with a warm compile cache in a
temporary folder (unchanged plans are read back). Target: well under 0.3 s on the 2-core machine.

    python bench/cli_latency.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
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


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def _first_line(argv: list[str], env: dict[str, str]) -> float:
    """Seconds until the command's first line on standard error; the command is stopped then."""
    with tempfile.TemporaryDirectory(prefix="ditsr-plan-bench-run-") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*argv, "--out", out], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert proc.stderr is not None
        proc.stderr.readline()
        seconds = time.perf_counter() - start
        proc.kill()
        proc.wait()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    exe = shutil.which("ditsr-plan") or str(Path(sys.executable).with_name("ditsr-plan"))
    cache = tempfile.mkdtemp(prefix="ditsr-plan-bench-")
    modes = {
        "cold": {**os.environ, "DITSR_PLAN_NO_CACHE": "1"},
        "cached": {**os.environ, "DITSR_PLAN_CACHE_DIR": cache, "DITSR_PLAN_NO_CACHE": "0"},
    }
    print(f"{'command':<52} {'mode':<7} {'median':>8} {'min':>8} {'max':>8}   ({args.runs} runs each)")
    for label, cmd in COMMANDS.items():
        argv = [sys.executable, "-c", "pass"] if cmd is None else [exe, *cmd]
        for mode, env in modes.items() if cmd else [("", os.environ.copy())]:
            _time(argv, env)  # warm the OS file cache, lark's grammar cache and (cached mode) the compile cache
            times = [_time(argv, env) for _ in range(args.runs)]
            med, lo, hi = statistics.median(times), min(times), max(times)
            print(f"{label:<52} {mode:<7} {med:>7.3f}s {lo:>7.3f}s {hi:>7.3f}s")
    for label, cmd in FIRST_LINE.items():
        for mode, env in modes.items():
            _first_line([exe, *cmd], env)
            times = [_first_line([exe, *cmd], env) for _ in range(args.runs)]
            med, lo, hi = statistics.median(times), min(times), max(times)
            print(f"{label:<52} {mode:<7} {med:>7.3f}s {lo:>7.3f}s {hi:>7.3f}s")
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
