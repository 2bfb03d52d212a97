"""matrix runs plans into sibling folders (skipping finished ones, resuming one); compare tabulates them."""

import json

import pytest

from ditsr_plan.cli import main
from ditsr_plan.testing import tiny_plan


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("matrix")
    a = tiny_plan(tmp, steps=4, ckpt=2, extra="eval every=2 steps=2 size=64 lpips=off\n")
    a.rename(tmp / "a.plan")
    (tmp / "b.plan").write_text('extends "a.plan"\nplan b\namend stage B: gan 0.05\n')
    (tmp / "a.plan").write_text((tmp / "a.plan").read_text().replace("plan tiny", "plan a"))
    out = tmp / "runs"
    assert main(["matrix", str(tmp / "a.plan"), str(tmp / "b.plan"), "--out", str(out)]) == 0
    return tmp, out


def test_matrix_runs_each_plan_into_its_folder_and_skips_finished_ones(matrix, capsys):
    tmp, out = matrix
    assert (out / "a" / "summary.json").is_file() and (out / "b" / "summary.json").is_file()
    capsys.readouterr()
    assert main(["matrix", str(tmp / "a.plan"), str(tmp / "b.plan"), "--out", str(out)]) == 0
    assert capsys.readouterr().err.count("finished before, skipped") == 2


def test_matrix_resumes_an_unfinished_run(matrix, capsys):
    tmp, out = matrix
    (out / "b" / "summary.json").unlink()
    capsys.readouterr()
    assert main(["matrix", str(tmp / "a.plan"), str(tmp / "b.plan"), "--out", str(out)]) == 0
    assert "resuming after step 4" in capsys.readouterr().err


def test_compare_table_json_and_picture(matrix, capsys, tmp_path):
    _, out = matrix
    runs = [str(out / "a"), str(out / "b")]
    picture = tmp_path / "side.png"
    assert main(["compare", *runs, "--plot", str(picture)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:5] == ["run", "plan", "steps", "PSNR", "SSIM"] and "defocus FHR" in text
    # one bicubic row (both runs validate on the same images), its PSNR the baseline's mean
    bicubic = [line for line in text.splitlines() if line.startswith("bicubic")]
    evals = [json.loads(x) for x in (out / "a" / "eval.jsonl").read_text().splitlines()]
    assert len(bicubic) == 1 and bicubic[0].split()[3] == f"{evals[-1]['bicubic']['mean']['psnr']:.2f}"
    assert picture.read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", *runs, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["plan"] for r in rows] == ["a", "b"] and rows[0]["steps"] == 4
    assert rows[0]["defocus_fhr"] == rows[0]["images"]["defocus"]["fhr"]
    assert rows[0]["best_psnr"] >= rows[0]["psnr"] and rows[0]["best_lpips"] is None
    assert main(["compare", *runs, "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| run | plan | steps | PSNR |")
    assert main(["compare", str(tmp_path)]) == 2


def test_the_notes_experiment_matrix_at_a_small_time_scale(tmp_path, capsys):
    out = tmp_path / "runs"
    plans = [f"plans/matrix/exp{i}.plan" for i in (1, 2, 3)]
    args = ["--time-scale", "0.002", "--set", "lpips.backbone=random", "--set", "eval.steps=10", "--out", str(out)]
    assert main(["matrix", *plans, *args]) == 0
    runs = [str(out / f"exp{i}") for i in (1, 2, 3)]
    capsys.readouterr()
    picture = tmp_path / "matrix.png"
    assert main(["compare", *runs, "--plot", str(picture)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[1:4]] == ["exp1", "exp2", "exp3"]
    assert all(line.split()[2] == "30" for line in table[1:4])  # 15k steps x 0.002
    assert picture.read_bytes()[:4] == b"\x89PNG"


def test_compare_labels_runs_by_folder_marks_unfinished_ones_and_warns_on_different_evals(matrix, capsys, tmp_path):
    import shutil

    _, out = matrix
    # two runs of the same plan, one of them unfinished (no summary.json), one validated differently
    same = tmp_path / "a-again"
    shutil.copytree(out / "a", same)
    (same / "summary.json").unlink()
    lines = (same / "eval.jsonl").read_text().splitlines()
    changed = [json.loads(line) for line in lines]
    for record in changed:
        record["settings"]["steps"] = 50
    (same / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changed))
    assert main(["compare", str(out / "a"), str(same)]) == 0
    captured = capsys.readouterr()
    rows = captured.out.splitlines()
    assert rows[1].split()[:2] == ["a", "a"] and rows[2].split()[:2] == ["a-again*", "a"]
    assert "* a-again: unfinished: 4 of 4 steps in its newest checkpoint" in captured.out
    assert "different eval settings (steps: a=2, a-again=50)" in captured.err
