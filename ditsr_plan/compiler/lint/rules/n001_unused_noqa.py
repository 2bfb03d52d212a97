from collections.abc import Iterator

from ditsr_plan.diagnostics import Diagnostic

from ..rule import Rule


class UnusedNoqa(Rule):
    """A `# noqa` comment that suppresses nothing.

    Why: a suppression that no longer matches a finding hides nothing today and will silently hide
    a different finding tomorrow; like ruff's RUF100, keep suppressions honest.

    Example:
        stage C 9k..: gan 0->0.03 linear over 4k   # noqa: G001   (G001 does not fire here)

    Fix: remove the comment, or the codes in it that no longer apply.
    """

    code = "N001"
    name = "unused-noqa"

    def check(self) -> Iterator[Diagnostic]:
        # The linter runs this rule last, after it has applied every other rule's suppressions.
        for pos, codes in self.ctx.unused_noqa:
            what = "a bare '# noqa'" if not codes else "'# noqa: " + ", ".join(codes) + "'"
            yield self.finding(
                f"{what} suppresses nothing here",
                pos,
                "remove it" if not codes else "remove the codes that no longer fire",
            )
