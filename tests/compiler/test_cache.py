"""The compile cache returns the same graph, and never a stale one."""

import json

from ditsr_plan.compiler import cache, compile_plan
from ditsr_plan.compiler.lint import lint_graph
from ditsr_plan.compiler.lint.rules import RULES


def _entries():
    return sorted(cache.cache_dir().glob("*.json"))


def test_cached_graph_equals_the_compiled_one(monkeypatch):
    first = compile_plan("plans/legacy/v9_gan_edge_gtmask.plan")
    assert len(_entries()) == 1
    again = cache.load("plans/legacy/v9_gan_edge_gtmask.plan", 1.0)
    assert again is not None and again == first and again.hash == first.hash
    # positions survive, so lint reads the same findings from a cached graph
    assert [(f.code, f.pos) for f in lint_graph(again, RULES)] == [(f.code, f.pos) for f in lint_graph(first, RULES)]
    assert again.terms["gan"].setting_origins == first.terms["gan"].setting_origins
    assert dict(again.sources) == dict(first.sources)


def test_an_edited_parent_is_a_miss(write_plan):
    parent = write_plan("steps 1k\nloss v vpred\nstage A 0..: v 1\n", "parent.plan")
    child = write_plan('extends "parent.plan"\nplan child\n', "child.plan")
    assert compile_plan(child).weights_at(0)["v"] == 1
    parent.write_text("steps 1k\nloss v vpred\nstage A 0..: v 0.5\n")
    assert cache.load(str(child), 1.0) is None
    assert compile_plan(child).weights_at(0)["v"] == 0.5


def test_time_scale_is_part_of_the_key():
    compile_plan("plans/v10.plan")
    assert cache.load("plans/v10.plan", 0.5) is None
    assert compile_plan("plans/v10.plan", 0.5).total_steps == 7500


def test_a_corrupt_entry_is_a_miss_and_can_be_disabled(monkeypatch):
    compile_plan("plans/v10.plan")
    (entry,) = _entries()
    entry.write_text("{not json")
    assert cache.load("plans/v10.plan", 1.0) is None
    data = compile_plan("plans/v10.plan")
    assert json.loads(entry.read_text())["graph"]["hash"] == data.hash
    monkeypatch.setenv("DITSR_PLAN_NO_CACHE", "1")
    assert cache.load("plans/v10.plan", 1.0) is None


def test_text_given_for_a_path_is_never_cached(write_plan):
    path = write_plan("steps 1k\nloss v vpred\nstage A 0..: v 1\n")
    compile_plan(path, text="steps 2k\nloss v vpred\nstage A 0..: v 1\n")
    assert _entries() == []
