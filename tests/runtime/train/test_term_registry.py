"""The kinds' registry (settings/schemas.py TERM_KINDS), the runtime's classes and the docs agree; a new kind
needs its schema, its module and one registry line."""

from __future__ import annotations

import json

from ditsr_plan.compiler import compile_plan
from ditsr_plan.dsl.settings_docs import settings_markdown
from ditsr_plan.runtime.train.terms import LossTerm, term_class
from ditsr_plan.settings.schemas import BLOCKS, TERM_KINDS
from ditsr_plan.testing import tiny_plan, trainer_for


def test_every_kind_names_a_runtime_class_and_every_setting_is_documented():
    for kind, schema in TERM_KINDS.items():
        assert schema.kind == kind
        assert issubclass(term_class(schema.implementation), LossTerm), kind
    schemas = [*TERM_KINDS.values(), *(s for kinds in BLOCKS.values() for s in kinds.values())]
    for schema in schemas:
        assert schema.__doc__, schema
        missing = [k for k, info in schema.model_fields.items() if not info.description]
        assert not missing, (schema.__name__, missing)


def test_a_new_kind_is_its_module_plus_one_registry_line(tmp_path, monkeypatch):
    from tests.runtime.train.toy_kind import ToySettings

    monkeypatch.setitem(TERM_KINDS, "toy", ToySettings)  # the registry line
    terms = "loss v vpred\nloss t toy scale=2\n"
    plan = tiny_plan(tmp_path, steps=4, terms=terms, stages="stage A 0..2: v 1\nstage B 2..: v 1; t 0.5\n")
    graph = compile_plan(plan)
    assert graph.terms["t"].implementation == "tests.runtime.train.toy_kind:Toy"
    trainer = trainer_for(plan)
    record = trainer.train_step(2, [trainer.data.batch(2)])
    assert "t" in record.raw and "t" in trainer.checked  # computed, and it reaches the generator
    assert "### `toy`" in settings_markdown() and "what the raw value is multiplied by" in settings_markdown()
    assert json.dumps(graph.to_json())  # the graph of a plan with the new kind serialises like any other
