from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic

from ...trust import code_run
from ..rule import Rule


class RunsCode(Rule):
    """A plan that runs Python code of its own: `model custom factory=...` or `file=...`.

    Why: a plan is code, like a Python script (docs/runtime.md, "Plans are code"): `factory=MODULE:FUNCTION`
    imports MODULE -- its import side effects run -- and calls FUNCTION; `file=PATH.py` executes that file.
    Reading or linting a plan runs nothing, but `run`, and `evaluate`, `export` and `upscale` of its run, do:
    review the code before running a plan you did not write, as you would a script.

    Example:
        model custom factory=mynets.sr:build file=mynets/sr.py

    Fix: nothing to fix when the code is yours; once reviewed, `# noqa: X001` on the line.
    """

    code = "X001"
    name = "runs-code"

    def check(self) -> Iterator[Diagnostic]:
        for run in code_run(self.graph):
            yield self.finding(
                f"this plan runs code: {run.what}",
                run.pos,
                "a plan can run code, like a Python script: run it only if you trust that code",
            )
