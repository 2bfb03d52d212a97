"""Lint rules as data: a plan and the (code, line) findings it must produce, and nothing else."""

import json
from pathlib import Path

import pytest

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.compiler.lint import lint_graph, lint_paths, selected_rules
from ditsr_plan.compiler.lint.rules import RULES

DECLS = """steps 15k
loss v     vpred
loss l1    latent_l1
loss lpips lpips
loss edge  edge
loss flat  flat
ema decay=0.999
"""  # the stage lines of each case start at line 8

GAN = "loss gan patchgan\n"  # declared after DECLS: stages then start at line 9
FFL = "loss ffl ffl\n"

CASES = {
    "clean": (
        DECLS + "stage A 0..3k: v 1; l1 1\nstage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; "
        "flat 0->0.06 linear\n",
        [],
    ),
    "T001 declared, never weighted": (
        DECLS + "stage A 0..3k: v 1; l1 1\nstage B 3k..: lpips 0->0.3 linear; flat 0->0.06 linear\n",
        [("T001", 5)],
    ),
    "W001 jump from 0": (
        DECLS + "stage A 0..3k: v 1; l1 1\nstage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0.06\n",
        [("W001", 9)],
    ),
    "W001 jump by more than 25% of the peak": (
        DECLS + "stage A 0..3k: v 1; l1 1\nstage B 3k..9k: lpips 0->0.1 linear; edge 0->0.05 linear; "
        "flat 0->0.06 linear\nstage C 9k..: lpips 0.3\n",
        [("W001", 10)],
    ),
    "W001 lowering a weight is fine": (
        DECLS + "stage A 0..3k: v 1; l1 1\nstage B 3k..9k: lpips 0->0.3 linear; edge 0->0.05 linear; "
        "flat 0->0.06 linear\nstage C 9k..: lpips 0.1\n",
        [],
    ),
    "W002 pixel term in the first stage": (
        DECLS + "stage A 0..3k: v 1; l1 1; flat 0.01\nstage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; "
        "flat ->0.06 linear\n",
        [("W002", 8)],
    ),
    "W002 one-stage plan: first 20%": (
        DECLS + "stage A 0..: v 1; l1 1; lpips 0->0.3 linear after 2k over 4k; edge 0->0.05 linear after 3k "
        "over 4k; flat 0->0.06 linear after 3k over 4k\n",
        [("W002", 8), ("R001", 8)],
    ),
    "G001 G002 G003 GAN too strong, too fast, too early": (
        DECLS + GAN + "stage A 0..3k: v 1; l1 1\nstage B 3k..: lpips 0->0.3 linear over 6k; edge 0->0.05 linear; "
        "flat 0->0.06 linear; gan 0->0.08 linear after 1k over 1k\n",
        [("G001", 10), ("G002", 10), ("G003", 10)],
    ),
    "G003 GAN without any LPIPS live": (
        DECLS + GAN + "stage A 0..3k: v 1; l1 1; lpips off\nstage B 3k..: edge 0->0.05 linear; "
        "flat 0->0.06 linear; gan 0->0.03 linear over 4k\n",
        [("T001", 4), ("G003", 10)],
    ),
    "G004 G005 GAN without R1 or EMA": (
        DECLS.replace("ema decay=0.999\n", "")
        + "loss gan patchgan r1=0\n\nstage A 0..3k: v 1; l1 1\nstage B 3k..9k: lpips 0->0.3 linear; "
        "edge 0->0.05 linear; flat 0->0.06 linear\nstage C 9k..: gan 0->0.03 linear over 4k\n",
        [("G004", 7), ("G005", 7)],
    ),
    "F001 F002 FFL too strong and too early": (
        DECLS + FFL + "stage A 0..3k: v 1; l1 1\nstage B 3k..9k: lpips 0->0.3 linear; edge 0->0.05 linear; "
        "flat 0->0.06 linear; ffl 0->0.05 linear\nstage C 9k..: v 1\n",
        [("F001", 10), ("F002", 10)],
    ),
    "R001 perceptual without a flat term": (
        DECLS + "stage A 0..3k: v 1; l1 1\nstage B 3k..9k: lpips 0->0.3 linear; edge 0->0.05 linear\n"
        "stage C 9k..: flat 0->0.06 linear\n",
        [("R001", 9), ("R002", 10)],
    ),
    "R002 flat below edge": (
        DECLS + "stage A 0..3k: v 1; l1 1\nstage B 3k..: lpips 0->0.3 linear; edge 0->0.10 linear; "
        "flat 0->0.05 linear\n",
        [("R002", 9)],
    ),
    "R002 cosine flat dips below linear edge inside a ramp": (
        DECLS + "stage A 0..3k: v 1; l1 1\nstage B 3k..: lpips 0->0.3 linear; edge 0->0.10 linear; "
        "flat 0->0.11 cosine\n",
        [("R002", 9)],
    ),
    "M001 patch too small": (
        DECLS + "pixel patch=64\nstage A 0..3k: v 1; l1 1\nstage B 3k..: lpips 0->0.3 linear; "
        "edge 0->0.05 linear; flat 0->0.06 linear\n",
        [("M001", 8)],
    ),
    "noqa suppresses on its line; N001 reports one that suppresses nothing": (
        DECLS + "stage A 0..3k: v 1; l1 1  # noqa: G001\nstage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; "
        "flat 0.06  # noqa: W001\n",
        [("N001", 8)],
    ),
    "X001 a plan that runs code names the module and the file": (
        DECLS + "model custom factory=mynets.sr:build file=mynets/sr.py\nstage A 0..3k: v 1; l1 1\n"
        "stage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [("X001", 8), ("X001", 8)],
    ),
    "A001 the scripts' zero-initialised pyramid heads cannot learn": (
        DECLS + "model pixart path=pixart cond=concat+adapter adapter=pyramid\nstage A 0..3k: v 1; l1 1\n"
        "stage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [("A001", 8)],
    ),
    "A001 pyramid heads at PyTorch's init learn": (
        DECLS + "model pixart path=pixart cond=concat+adapter adapter=pyramid pyramid_heads=default\n"
        "stage A 0..3k: v 1; l1 1\nstage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [],
    ),
    "D001 t_min above the eval sampler's last timestep": (
        DECLS + "diffusion t_min=900\neval steps=50 spacing=trailing\nstage A 0..3k: v 1; l1 1\n"
        "stage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [("D001", 8)],
    ),
    "D001 leading spacing ends at t = 0": (
        DECLS + "diffusion t_min=1\neval steps=1\nstage A 0..3k: v 1; l1 1\n"
        "stage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [("D001", 8)],
    ),
    "D001 without an eval block, upscale's default sampler ends at t = 0": (
        DECLS + "diffusion t_min=900\nstage A 0..3k: v 1; l1 1\n"
        "stage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [("D001", 8)],
    ),
    "V001 a watch that starts after the last eval": (
        DECLS + "eval every=1k\nwatch psnr < 20 after 16k: warn\nstage A 0..3k: v 1; l1 1\n"
        "stage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [("V001", 9)],
    ),
    "V001 a watch that needs more evals than come after its start": (
        DECLS + "eval every=1k\nwatch psnr < 20 for 3 evals after 13.5k: warn\nstage A 0..3k: v 1; l1 1\n"
        "stage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [("V001", 9)],
    ),
    "V001 a watch with enough evals (14k, 15k and the end) fires": (
        DECLS + "eval every=1k\nwatch psnr < 20 for 2 evals after 13.5k: warn\nstage A 0..3k: v 1; l1 1\n"
        "stage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [],
    ),
    "D001 one trailing step from the last timestep is trained": (
        DECLS + "diffusion t_min=900\neval steps=1 spacing=trailing\nstage A 0..3k: v 1; l1 1\n"
        "stage B 3k..: lpips 0->0.3 linear; edge 0->0.05 linear; flat 0->0.06 linear\n",
        [],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rule_cases(case, write_plan):
    text, expected = CASES[case]
    graph = compile_plan(write_plan(text))
    found = [(f.code, f.pos.line) for f in lint_graph(graph, RULES)]
    assert sorted(found) == sorted(expected)


def test_rule_thresholds_scale_with_time_scale(write_plan):
    text = CASES["clean"][0] + GAN + ""
    text = text.replace("stage B 3k..:", "stage B 3k..9k:") + "stage C 9k..: gan 0->0.03 linear over 4k\n"
    path = write_plan(text)
    assert lint_graph(compile_plan(path, time_scale=0.01), RULES) == []


LEGACY = {
    "v8_old": {"R001"},
    "v8": {"F001", "R001", "W002"},
    "v9_gan": {"G001", "G003", "R001"},
    "v8_edge_gtmask": {"T001"},
    "v9_gan_edge_gtmask": {"T001", "G001"},
}


@pytest.mark.parametrize("name", list(LEGACY))
def test_legacy_plans_show_the_notes_mistakes(name):
    result = lint_paths([f"plans/legacy/{name}.plan"])
    codes = {f.code for f in result.findings}
    assert LEGACY[name] <= codes, codes
    assert not any(f.severity == "error" for f in result.findings)


def test_legacy_plans_name_their_source():
    for path in Path("plans/legacy").glob("*.plan"):
        assert path.read_text().startswith("# Source: train_4090_auto_"), path


@pytest.mark.parametrize(
    "path", ["plans/v10.plan", "plans/matrix/exp1.plan", "plans/matrix/exp2.plan", "plans/matrix/exp3.plan"]
)
def test_recommended_plans_are_lint_clean(path):
    assert lint_paths([path]).findings == []


def test_select_and_ignore():
    assert [r.code for r in selected_rules(["G00"], ["G004"])] == ["G001", "G002", "G003", "G005"]
    result = lint_paths(["plans/legacy/v9_gan.plan"], select=["R"])
    assert {f.code for f in result.findings} == {"R001"}


def test_exit_codes_and_formats(capsys, tmp_path):
    assert main(["lint", "plans/v10.plan"]) == 0
    assert capsys.readouterr().out == "1 plan checked: no findings\n"
    assert main(["lint", "plans/legacy/v8.plan", "--format", "json"]) == 1
    findings = json.loads(capsys.readouterr().out)
    assert {"F001", "R001", "W002"} <= {f["code"] for f in findings}
    assert all({"file", "line", "col", "message", "name"} <= set(f) for f in findings)

    assert main(["lint", "plans/legacy/v8.plan", "--format", "github"]) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("::warning file=plans/legacy/v8.plan,line=10,col=19,title=")

    assert main(["lint", "plans/legacy", "--format", "sarif"]) == 1
    sarif = json.loads(capsys.readouterr().out)
    assert sarif["version"] == "2.1.0"
    assert {r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]} == {r.code for r in RULES}
    assert sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1

    assert main(["lint", "plans", "--select", "Z999"]) == 2
    assert "unknown rule code" in capsys.readouterr().err
    assert main(["lint", "no/such/dir"]) == 2


def test_compile_errors_are_findings_with_exit_1(capsys):
    assert main(["lint", "tests/fixtures/bad/unknown_term.plan"]) == 1
    out = capsys.readouterr().out
    assert "tests/fixtures/bad/unknown_term.plan:6:17: error: unknown term 'lpip' in stage B" in out


def test_param_changes_a_threshold(capsys):
    assert main(["lint", "plans/legacy/v9_gan.plan", "--select", "G001", "--param", "G001.max=0.1"]) == 0
    assert main(["lint", "plans", "--param", "G001.nope=1"]) == 2


def test_rules_command_lists_every_rule_with_its_docs(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for rule in RULES:
        assert f"{rule.code} {rule.name}" in out
        doc = rule.docs()
        assert "Why:" in doc and "Example:" in doc and "Fix:" in doc, rule.code


def test_docs_rules_page_is_generated_from_the_rules():
    from ditsr_plan.compiler.lint.report import rules_markdown

    regenerate = "python -m ditsr_plan.compiler.lint.report > docs/rules.md"
    assert Path("docs/rules.md").read_text() == rules_markdown(), regenerate


def test_a_child_plans_watch_lines_replace_its_parents(write_plan, tmp_path):
    """v10's 'after 9k' watches never fire in the 1.2k-step demo (V001); the demo restates them at its steps."""
    demo = compile_plan("plans/demo.plan")
    assert [(str(w.metric), w.after) for w in demo.watches] == [("defocus.fhr", 720), ("defocus.esr", 720)]
    assert lint_graph(demo, RULES) == []
    child = tmp_path / "child.plan"
    child.write_text('extends "' + str(Path("plans/demo.plan").resolve()) + '"\nplan child\neval every=300\n')
    found = [(f.code, f.pos.file.endswith("demo.plan")) for f in lint_graph(compile_plan(child), RULES)]
    assert ("V001", True) in found  # inherited unchanged: after 720 with every=300 leaves 900 and 1200, not 3
