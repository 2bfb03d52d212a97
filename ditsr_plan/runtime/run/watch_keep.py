"""The plan's rules on validation metrics: ``watch`` (stop or warn) and ``keep best`` (checkpoint selection).

Both read :class:`~ditsr_plan.runtime.records.EvalRecord` s."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from ditsr_plan.compiler.graph import Keep, Watch

from ..records import EvalRecord, json_safe


class Watches:
    """Counts, per watch, the consecutive evals (after its ``after`` step) on which it held."""

    def __init__(self, watches: tuple[Watch, ...]):
        self.watches = watches
        self.streak = [0] * len(watches)

    def check(self, record: EvalRecord) -> list[dict]:
        """The watches that fire at this eval record, as events."""
        events = []
        for i, w in enumerate(self.watches):
            value = w.metric.of(record)
            active = record.step >= w.after
            self.streak[i] = self.streak[i] + 1 if active and _holds(w, value) else 0
            if self.streak[i] >= w.evals:
                events.append(
                    {
                        "watch": f"{w.metric} {w.op} {w.value:g} for {w.evals} evals",
                        "value": value,
                        "action": w.action,
                        "step": record.step,
                        "rule": rule_text(w),
                        "at": str(w.origin) if w.origin else None,
                    }
                )
        return events


def rule_text(w: Watch) -> str:
    """The watch as the plan writes it, with its ``after`` as this run counts it (scaled with the steps)."""
    return f"watch {w.metric} {w.op} {w.value:g} for {w.evals} evals after {w.after}: {w.action}"


def scaled_rules_note(watches: tuple[Watch, ...], keep: Keep | None, time_scale: float) -> str | None:
    """What a run at another time scale should know before step 0: its watch rules start at scaled steps
    (a smoke run at --time-scale 0.001 reaches v10's 'after 9k' at step 9)."""
    if time_scale == 1 or not (watches or keep):
        return None
    lines = [f"watch/keep rules are scaled with the steps (time scale {time_scale:g}):"]
    for w in watches:
        lines.append(f"  {rule_text(w)}" + (f" ({w.origin})" if w.origin else ""))
    if keep is not None:
        lines.append(f"  keep best {keep.count} by {keep.direction} {keep.metric}: at every eval, as in the plan")
    return "\n".join(lines)


def _holds(watch: Watch, value: float | None) -> bool:
    """A watch holds on a NaN metric (an eval whose SR was not finite): whatever it guards, that is worse."""
    if isinstance(value, float) and math.isnan(value):
        return True
    return watch.holds(value)


def _key(direction: str, value: float | None) -> tuple[int, float]:
    """Sort key: present (and not NaN) values first, best first."""
    if value is None or math.isnan(value):
        return (1, 0.0)
    return (0, value if direction == "min" else -value)


def rank(keep: Keep, records: list[EvalRecord]) -> list[EvalRecord]:
    """Eval records best first: those meeting ``where`` (with the metric present) by ``metric``,
    then the rest by the fallback (or by ``metric`` when there is none)."""

    def meets(r: EvalRecord) -> bool:
        if keep.where is None:
            return True
        return keep.where.holds(keep.where.metric.of(r)) and keep.metric.of(r) is not None

    first = sorted((r for r in records if meets(r)), key=lambda r: _key(keep.direction, keep.metric.of(r)))
    direction, metric = keep.fallback if keep.fallback else (keep.direction, keep.metric)
    rest = sorted((r for r in records if not meets(r)), key=lambda r: _key(direction, metric.of(r)))
    return first + rest


def _link_tree(source: Path, target: Path) -> None:
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


def update_best(keep: Keep, records: list[EvalRecord], checkpoints: Path, best: Path) -> list[dict]:
    """Keep the ``keep.count`` best evaluated checkpoints in ``best/`` (hard links where possible) and
    list them with their metrics in ``best/best.json``."""
    best.mkdir(parents=True, exist_ok=True)
    ranked = [
        r
        for r in rank(keep, records)
        if (best / f"step-{r.step:08d}").is_dir() or (checkpoints / f"step-{r.step:08d}").is_dir()
    ][: keep.count]
    wanted = {f"step-{r.step:08d}" for r in ranked}
    for folder in best.glob("step-*"):
        if folder.name not in wanted:
            shutil.rmtree(folder)
    for name in wanted:
        if not (best / name).is_dir():
            _link_tree(checkpoints / name, best / name)
    listing = [
        {
            "rank": i + 1,
            "step": r.step,
            "checkpoint": str(best / f"step-{r.step:08d}"),
            "mean": r.mean,
            "images": r.images,
        }
        for i, r in enumerate(ranked)
    ]
    (best / "best.json").write_text(json.dumps(json_safe({"rule": keep.to_json(), "kept": listing}), indent=1))
    return listing
