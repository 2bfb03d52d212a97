import pytest

from ditsr_plan.diagnostics import PlanError
from ditsr_plan.dsl.parser import parse_plan
from ditsr_plan.dsl.syntax import BlockStmt, LossStmt, StageStmt


def test_statements_and_positions():
    text = 'plan x\nsteps 9k\nloss gan patchgan r1=10 lr=1e-4\nema decay=0.999\ndata folder root="/a b"\n'
    text += "stage B 3k..: lpips ->0.35 cosine over 4k after 1k\n"
    plan = parse_plan(text, "f.plan")
    loss = plan.statements[2]
    assert isinstance(loss, LossStmt)
    assert (loss.name.text, loss.kind.text) == ("gan", "patchgan")
    assert [(s.key.text, s.value, s.value_pos.col) for s in loss.settings] == [("r1", "10", 22), ("lr", "1e-4", 28)]
    block = plan.statements[4]
    assert isinstance(block, BlockStmt) and block.kind.text == "folder" and block.settings[0].value == "/a b"
    stage = plan.statements[5]
    assert isinstance(stage, StageStmt) and stage.end is None and stage.start.value == 3000
    (ramp,) = stage.terms
    assert ramp.op == "ramp" and ramp.start is None and ramp.end.value == 0.35
    assert (ramp.shape.text, ramp.over.value, ramp.after.value) == ("cosine", 4000, 1000)
    assert (ramp.pos.line, ramp.pos.col) == (6, 15)


def test_indented_lines_continue_a_stage_and_comments_are_kept():
    text = "stage B 3k..9k: lpips 0->0.35;  # perceptual\n    edge 0->0.06   # region\nstage C 9k..:\n"
    plan = parse_plan(text, "f.plan")
    b, c = plan.statements
    assert [t.knob.text for t in b.terms] == ["lpips", "edge"]
    assert b.terms[1].pos.line == 2
    assert c.terms == ()
    assert [c.text for c in plan.layout[0].comments] == ["# perceptual", "# region"]


def test_a_stage_line_without_indent_after_colon_is_a_new_statement():
    plan = parse_plan("stage A 0..1k:\nstage B 1k..: v 1\n", "f.plan")
    assert [s.name.text for s in plan.statements] == ["A", "B"]


def test_every_syntax_error_of_a_file_is_reported():
    text = "plan x\nstag A 0..3k: v 1\nstage B 3k..: lpips 0->0.3 lineer\nloss x\n"
    with pytest.raises(PlanError) as exc:
        parse_plan(text, "f.plan")
    lines = [(d.pos.line, d.pos.col) for d in exc.value.diagnostics]
    assert lines == [(2, 1), (3, 28), (4, 7)]  # "stag" itself is the mistake on line 2
    hints = [d.hint for d in exc.value.diagnostics]
    assert hints[0] == "did you mean 'stage'?"
    assert hints[1] == "did you mean 'linear'?"


def test_messages_name_terminals_in_words():
    with pytest.raises(PlanError) as exc:
        parse_plan("stage A 0..: v 1 ->\n", "f.plan")
    message = exc.value.diagnostics[0].message
    assert "__ANON" not in message and "expected" in message


def test_hash_inside_quotes_is_not_a_comment():
    plan = parse_plan('data folder root="/data/#1"\n', "f.plan")
    assert plan.statements[0].settings[0].value == "/data/#1"


def test_a_misspelt_statement_word_is_the_error_not_what_follows():
    with pytest.raises(PlanError) as exc:
        parse_plan("plan p\nsteps 10\nstgae A 0..: v 1\n", "f.plan")
    (d,) = exc.value.diagnostics
    assert (d.pos.line, d.pos.col, d.pos.length) == (3, 1, 5)
    assert d.message == "unknown statement 'stgae'" and d.hint == "did you mean 'stage'?"


def test_an_indented_continuation_without_its_semicolon_says_so():
    text = "plan p\nsteps 10\nstage A 0..: v 1\n    e 0->0.06 linear\n"
    with pytest.raises(PlanError) as exc:
        parse_plan(text, "f.plan")
    (d,) = exc.value.diagnostics
    assert d.pos.line == 4 and "does not end in ';'" in d.message and "end line 3 with ';'" in d.hint
