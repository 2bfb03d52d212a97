"""docs/settings.md is generated from the setting schemas (python -m ditsr_plan.dsl.settings_docs)."""

from pathlib import Path

from ditsr_plan.dsl.settings_docs import settings_markdown
from ditsr_plan.settings.schemas import TERM_KINDS


def test_the_settings_docs_are_generated_from_the_schemas():
    assert Path("docs/settings.md").read_text() == settings_markdown(), (
        "docs/settings.md is stale: python -m ditsr_plan.dsl.settings_docs > docs/settings.md"
    )
    text = settings_markdown()
    assert all(f"### `{kind}`" in text for kind in TERM_KINDS)
