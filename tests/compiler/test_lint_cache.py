"""lint reads the findings of an unchanged plan back from the compile cache: the same findings, and a cache
hit imports neither the parser (lark) nor the validator (pydantic) nor the rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ditsr_plan.compiler import cache
from ditsr_plan.compiler.lint import lint_paths
from ditsr_plan.compiler.lint.codes import RULE_NAMES
from ditsr_plan.compiler.lint.rules import RULES


def _shown(result):
    return [(f.code, f.pos, f.message, f.hint, f.notes, f.severity) for f in result.findings]


def test_rule_names_match_the_rules():
    assert list(RULE_NAMES.items()) == [(r.code, r.name) for r in RULES]


def test_cached_findings_are_the_fresh_ones(monkeypatch):
    first = lint_paths(["plans/"])
    entries = list(cache.cache_dir().glob("*.json"))
    assert entries and all("lint" in json.loads(e.read_text()) for e in entries)
    again = lint_paths(["plans/"])
    assert _shown(again) == _shown(first) and again.sources == first.sources and again.files == first.files
    # a parent's finding keeps the note naming the child that found it
    assert any(n.message.startswith("found while linting") for f in again.findings for n in f.notes)
    monkeypatch.setenv("DITSR_PLAN_NO_CACHE", "1")
    assert _shown(lint_paths(["plans/"])) == _shown(first)


def test_the_rule_choice_is_part_of_the_key():
    everything = lint_paths(["plans/legacy"])
    assert {f.code for f in everything.findings} - {"T001"}
    only_t = lint_paths(["plans/legacy"], select=["T"])
    assert only_t.findings and {f.code for f in only_t.findings} == {"T001"}
    strict = lint_paths(["plans/legacy"], params={"G001": {"max": 1e-6}})
    loose = lint_paths(["plans/legacy"], params={"G001": {"max": 100.0}})
    assert sum(f.code == "G001" for f in strict.findings) > sum(f.code == "G001" for f in loose.findings)
    assert _shown(lint_paths(["plans/legacy"])) == _shown(everything)


def test_an_edited_parent_is_linted_again(write_plan):
    parent = write_plan("steps 1k\nloss v vpred\nloss e edge\nstage A 0..: v 1; e 0.1\n", "parent.plan")
    child = write_plan('extends "parent.plan"\nplan child\n', "child.plan")
    assert lint_paths([child], select=["T"]).findings == []
    parent.write_text("steps 1k\nloss v vpred\nloss e edge\nstage A 0..: v 1\n")
    assert [f.code for f in lint_paths([child], select=["T"]).findings] == ["T001"]


def test_a_cache_hit_imports_neither_lark_nor_pydantic_nor_the_rules(tmp_path):
    env = {**os.environ, "DITSR_PLAN_CACHE_DIR": str(tmp_path), "DITSR_PLAN_NO_CACHE": "0"}
    code = (
        "import sys\n"
        "from ditsr_plan.cli import main\n"
        "code = main(['lint', '-q', 'plans/'])\n"
        "heavy = [m for m in ('lark', 'pydantic', 'ditsr_plan.compiler.lint.rules', 'ditsr_plan.compiler.graph')"
        " if m in sys.modules]\n"
        "print(code, heavy, file=sys.stderr)\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True) for _ in "ab"]
    assert (
        runs[0]
        .stderr.strip()
        .endswith("['lark', 'pydantic', 'ditsr_plan.compiler.lint.rules', 'ditsr_plan.compiler.graph']")
    )
    assert runs[1].stderr.strip().endswith("1 []"), runs[1].stderr
    assert runs[1].stdout == runs[0].stdout and "F001" in runs[0].stdout


def test_lark_is_imported_without_regex_and_regex_still_imports():
    code = (
        "import sys, importlib.util\n"
        "import ditsr_plan.dsl.parser\n"
        "assert 'lark' in sys.modules and 'regex' not in sys.modules\n"
        "if importlib.util.find_spec('regex') is not None:\n"
        "    import regex\n"
        "    assert regex.match('a+', 'aa')\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "ok", run.stderr


def test_a_tampered_entry_is_a_miss_never_a_crash():
    first = lint_paths(["plans/legacy/v8.plan"])
    (entry,) = cache.cache_dir().glob("*.json")
    data = json.loads(entry.read_text())
    for bad in ([{"code": "G001"}], [{**data["lint"][next(iter(data["lint"]))][0], "pos": ["x", "1", 1, 1]}], "no"):
        data["lint"] = {key: bad for key in data["lint"]}
        entry.write_text(json.dumps(data))
        assert _shown(lint_paths(["plans/legacy/v8.plan"])) == _shown(first)
        data = json.loads(entry.read_text())  # the miss wrote the findings again
