from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic
from ditsr_plan.settings.numbers import format_steps
from ditsr_plan.settings.schemas import Eval

from ..rule import Rule


def eval_steps(every: int, total: int) -> list[int]:
    """The steps after which a run evaluates: every ``every`` steps, and at its end."""
    return sorted({*range(every, total + 1, every), total})


class WatchNeverFires(Rule):
    """A `watch` rule that no eval of the run can ever trigger.

    Why: a watch is a guard (stop when texture is invented in defocus regions, warn on lasting blur; loss
    notes 2.1, 2.2). One that starts after the run's last eval (`after 9k` in a plan of 1.2k steps, often
    inherited from a longer parent), that needs more consecutive evals than come after its start, or that
    has no eval block to read, is defined and never evaluated -- the notes' "defined but never computed",
    for a safety rule.

    Example:
        steps 1200
        eval every=200
        watch defocus.fhr > 1.3 for 2 evals after 9k: stop

    Fix: restate the rule at the plan's own steps (a child plan's watch lines replace its parent's), e.g.
    `watch defocus.fhr > 1.3 for 2 evals after 720: stop`, or evaluate more often.
    """

    code = "V001"
    name = "watch-never-fires"

    def check(self) -> Iterator[Diagnostic]:
        if not self.graph.watches:
            return
        block = self.graph.blocks.get("eval")
        evaluation = block.settings if block is not None else None
        total = self.graph.total_steps
        steps = eval_steps(evaluation.every, total) if isinstance(evaluation, Eval) else []
        for watch in self.graph.watches:
            after = [s for s in steps if s >= watch.after]
            if len(after) >= watch.evals:
                continue
            if not steps:
                why = "the plan has no eval block: nothing is evaluated"
            elif not after:
                why = f"it starts at step {format_steps(watch.after)}, after the last eval ({format_steps(steps[-1])})"
            else:
                why = f"it needs {watch.evals} consecutive evals and only {len(after)} come at or after its start"
            yield self.finding(
                f"watch {watch.metric} {watch.op} {watch.value:g} never fires: {why}",
                watch.origin,
                "restate it at this plan's steps (a child plan's watch lines replace its parent's), or evaluate "
                "more often",
            )
