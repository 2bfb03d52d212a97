"""watch and keep best: compiled with checked metric names, acted on after each eval."""

import json

import pytest

from ditsr_plan.compiler import compile_plan
from ditsr_plan.compiler.graph import Keep, MetricName, Watch
from ditsr_plan.diagnostics import PlanError
from ditsr_plan.runtime.records import EvalRecord
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.runtime.run.watch_keep import Watches, rank
from ditsr_plan.testing import tiny_plan


def _record(step, psnr, lpips=None, fhr=1.0):
    return EvalRecord(step, {"defocus": {"fhr": fhr, "psnr": psnr}}, {"psnr": psnr, "lpips": lpips})


def test_the_reference_keep_rule():
    keep = Keep(
        2,
        "min",
        MetricName(None, "lpips"),
        Watch(MetricName(None, "psnr"), ">=", 24.0, 1, 0, ""),
        ("max", MetricName(None, "psnr")),
    )
    records = [_record(1, 23.9, 0.10), _record(2, 24.5, 0.30), _record(3, 25.0, 0.20), _record(4, 23.0, 0.05)]
    assert [r.step for r in rank(keep, records)] == [3, 2, 1, 4]
    # nobody reaches PSNR 24: the highest PSNR wins; without LPIPS (offline) the same
    low = [_record(1, 20.0, 0.1), _record(2, 22.0, 0.3)]
    assert [r.step for r in rank(keep, low)][:1] == [2]
    assert [r.step for r in rank(keep, [_record(1, 25.0), _record(2, 26.0)])] == [2, 1]


def test_watch_fires_after_n_consecutive_evals_and_only_after_its_step():
    w = Watches((Watch(MetricName("defocus", "fhr"), ">", 1.3, 2, 3, "stop"),))
    fired = [
        bool(w.check(_record(s, 20, fhr=f))) for s, f in [(1, 2.0), (2, 2.0), (3, 2.0), (4, 1.0), (5, 1.4), (6, 1.5)]
    ]
    assert fired == [False, False, False, False, False, True]


def test_metric_names_are_checked_with_positions(write_plan):
    path = write_plan(
        "steps 1k\nloss v vpred\neval every=100\nwatch defocus.fhrr > 1: stop\n"
        "watch defocuss.fhr > 1: stop\nstage A 0..: v 1\n"
    )
    with pytest.raises(PlanError) as exc:
        compile_plan(path)
    found = {(d.pos.line, d.pos.col, d.message, d.hint) for d in exc.value.diagnostics}
    assert (4, 15, "unknown metric 'fhrr'", "did you mean 'fhr'?") in found
    assert (5, 7, "unknown validation image 'defocuss'", "did you mean 'defocus'?") in found


def test_a_watch_without_eval_is_an_error(write_plan):
    with pytest.raises(PlanError, match="no 'eval' line"):
        compile_plan(write_plan("steps 1k\nloss v vpred\nwatch psnr < 1: warn\nstage A 0..: v 1\n"))


def test_v10_rules_compile():
    graph = compile_plan("plans/v10.plan")
    assert [str(w.metric) for w in graph.watches] == ["defocus.fhr", "defocus.esr"]
    assert graph.watches[0].after == 9000 and graph.keep.count == 2


def test_a_run_stops_on_a_watch_and_keeps_its_best_checkpoints(tmp_path):
    extra = "eval every=1 steps=2 size=64 lpips=off\nwatch psnr < 100 for 3 evals: stop\nkeep best 2 by max psnr\n"
    run_dir = tmp_path / "run"
    result = run_plan(compile_plan(tiny_plan(tmp_path, steps=8, ckpt=100, extra=extra)), run_dir)
    assert result.steps_done == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["stopped_by"]["action"] == "stop"
    lines = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [len(x["watch"]) for x in lines] == [0, 0, 1]
    best = json.loads((run_dir / "best" / "best.json").read_text())
    psnrs = sorted((x["mean"]["psnr"], x["step"]) for x in lines)[::-1][:2]
    assert [k["step"] for k in best["kept"]] == [s for _, s in psnrs]
    assert sorted(p.name for p in (run_dir / "best").glob("step-*")) == sorted(f"step-{s:08d}" for _, s in psnrs)
    assert (run_dir / "final" / "generator").is_dir()
