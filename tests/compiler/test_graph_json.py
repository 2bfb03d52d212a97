"""The graph's settings go out as JSON by model_dump and come back by validation: the same graph, the same
hash, a plan.json written before the settings package still loads, and a graph whose settings this
version does not accept is refused with the version message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ditsr_plan.compiler import compile_plan
from ditsr_plan.compiler.graph import ScheduleGraph
from ditsr_plan.settings.schemas import Ema, PatchGan

BEFORE = Path("tests/fixtures/graphs/exp3-before-settings-package.json")  # written by 1e2170a


@pytest.mark.parametrize("plan", ["plans/v10.plan", "plans/demo.plan", "plans/reference/pixart_v10.plan"])
def test_a_graph_comes_back_from_its_json_unchanged(plan):
    graph = compile_plan(plan)
    again = ScheduleGraph.from_json(json.loads(json.dumps(graph.to_json())))
    assert again == graph and again.hash == graph.hash
    assert all(again.blocks[n].settings == b.settings for n, b in graph.blocks.items())


def test_the_settings_are_frozen_schema_instances():
    graph = compile_plan("plans/v10.plan")
    assert isinstance(graph.block("ema"), Ema) and isinstance(graph.terms["gan"].settings, PatchGan)
    assert graph.block("ema").decay == 0.999 and graph.blocks["ema"].kind is None
    with pytest.raises(ValueError):
        graph.block("ema").decay = 0.5  # frozen


def test_a_plan_json_written_before_the_settings_package_still_loads():
    data = json.loads(BEFORE.read_text())
    graph = ScheduleGraph.from_json(data)
    assert graph.hash == data["hash"] == compile_plan("plans/matrix/exp3.plan", time_scale=0.02).hash
    assert graph.block("optim").betas == (0.9, 0.999)  # validated: JSON lists are tuples again


def test_settings_this_version_does_not_accept_are_refused_with_the_version_message():
    data = json.loads(BEFORE.read_text())
    data["blocks"]["ema"]["values"]["decay"] = 1.5
    with pytest.raises(ValueError, match=r"block ema: decay: .*written by a version of ditsr-plan whose settings"):
        ScheduleGraph.from_json(data)
    data = json.loads(BEFORE.read_text())
    data["terms"]["gan"]["settings"]["r1_gamma"] = 10
    with pytest.raises(ValueError, match="term gan: r1_gamma: Extra inputs are not permitted"):
        ScheduleGraph.from_json(data)
