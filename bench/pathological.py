"""Pathological sizes: compile and lint plans of N stages (4 term statements each) for doubling N, and
print the time per stage, which stays flat when both scale linearly.

    python bench/pathological.py [--max 8000]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["DITSR_PLAN_NO_CACHE"] = "1"

from ditsr_plan.compiler import compile_plan
from ditsr_plan.compiler.lint import lint_graph
from ditsr_plan.compiler.lint.rules import RULES


def plan_text(stages: int) -> str:
    lines = ["plan big", f"steps {stages * 10}", "loss v vpred", "loss lpips lpips", "loss flat flat", "loss edge edge"]
    for i in range(stages):
        lines.append(
            f"stage s{i} {i * 10}..{(i + 1) * 10}: v 1; lpips {0.1 + (i % 5) * 0.01}; "
            f"flat ->{0.2 + (i % 3) * 0.01}; edge 0.05"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=8000)
    args = parser.parse_args()
    compile_plan("warm.plan", text="steps 1k\nloss v vpred\nstage A 0..: v 1\n")
    print(f"{'stages':>7} {'compile':>9} {'lint':>8} {'compile/stage':>14} {'lint/stage':>11}")
    n = 1000
    while n <= args.max:
        text = plan_text(n)
        t0 = time.perf_counter()
        graph = compile_plan("big.plan", text=text)
        t1 = time.perf_counter()
        lint_graph(graph, RULES)
        t2 = time.perf_counter()
        print(
            f"{n:>7} {t1 - t0:>8.2f}s {t2 - t1:>7.3f}s {(t1 - t0) / n * 1e6:>11.0f} us {(t2 - t1) / n * 1e6:>8.1f} us"
        )
        n *= 2


if __name__ == "__main__":
    main()
