"""Validation packs: 'pack make' (deterministic, byte-identical), 'eval pack=DIR' in a run (per-image
metrics, the pack mean and its bicubic baseline in eval.jsonl; pack.* in keep/watch checked at compile
time), 'evaluate RUN --pack DIR' offline, and the errors of a bad pack."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.diagnostics import PlanError
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.runtime.validate.packs import PackError, load_pack
from ditsr_plan.testing import folder_bytes, tiny_plan

torch.set_num_threads(2)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of scikit-image's photographs (one grey), one in a subfolder."""
    import skimage.data
    from PIL import Image

    folder = tmp_path_factory.mktemp("hr")
    (folder / "sub").mkdir()
    for i, name in enumerate(PHOTOS):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / ("sub" if i == 0 else ".") / f"{name}.png")
    return folder


def test_pack_make_is_deterministic_and_says_what_it_made(photos, tmp_path):
    args = ["pack", "make", str(photos), "--n", "3", "--size", "64", "--seed", "5"]
    assert main([*args[:3], str(tmp_path / "a"), *args[3:]]) == 0
    assert main([*args[:3], str(tmp_path / "b"), *args[3:]]) == 0
    a, b = folder_bytes(tmp_path / "a"), folder_bytes(tmp_path / "b")
    assert a == b  # byte-identical, manifest included
    manifest = json.loads(a["manifest.json"])
    assert manifest["n"] == 3 and manifest["seed"] == 5 and manifest["scale"] == 4 and manifest["size"] == 64
    assert manifest["degradation"]["kind"] == "highorder" and manifest["degradation"]["second"] == 0.35
    for entry in manifest["images"]:
        assert (photos / entry["source"]).is_file() and len(entry["box"]) == 4
        assert hashlib.sha256(a["gt/" + entry["name"]]).hexdigest() == entry["gt_sha256"]
        assert hashlib.sha256(a["lq/" + entry["name"]]).hexdigest() == entry["lq_sha256"]
    images = load_pack(tmp_path / "a", scale=4)
    assert [im.gt.shape for im in images] == [(1, 3, 64, 64)] * 3
    assert all(im.lr_up.shape == im.gt.shape for im in images)
    assert main([*args[:3], str(tmp_path / "c"), "--n", "3", "--size", "64", "--seed", "6"]) == 0
    assert folder_bytes(tmp_path / "c") != a
    # a folder that exists is never overwritten
    assert main([*args[:3], str(tmp_path / "a"), *args[3:]]) == 2


def test_pack_make_degrades_as_the_plan_says(photos, tmp_path, write_plan):
    plan = write_plan("plan p\nsteps 10\nloss v vpred\ndata builtin scale=2\ndegrade bicubic\nstage A 0..: v 1\n")
    assert (
        main(["pack", "make", str(photos), str(tmp_path / "p"), "--n", "2", "--size", "32", "--plan", str(plan)]) == 0
    )
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert manifest["degradation"]["kind"] == "bicubic" and manifest["scale"] == 2
    assert load_pack(tmp_path / "p", scale=2)[0].gt.shape == (1, 3, 32, 32)


def _pack(folder, names=("a.png", "b.png"), gt="gt", lq="lq", lr_size=8):
    from PIL import Image

    (folder / gt).mkdir(parents=True)
    (folder / lq).mkdir()
    for n in names:
        Image.new("RGB", (32, 32), (100, 20, 20)).save(folder / gt / n)
        Image.new("RGB", (lr_size, lr_size), (100, 20, 20)).save(folder / lq / n)
    return folder


def test_bad_packs_get_clear_errors(tmp_path):
    ok = load_pack(_pack(tmp_path / "ref", gt="gt32", lq="lq8"), scale=4)  # the reference's layout
    assert [im.name for im in ok] == ["a.png", "b.png"]
    assert len(load_pack(tmp_path / "ref", scale=4, limit=1)) == 1
    (tmp_path / "nolq" / "gt").mkdir(parents=True)
    cases = [
        (tmp_path / "missing", "no such folder"),
        (tmp_path / "nolq", "no lq* folder"),
    ]
    names = _pack(tmp_path / "names", names=("a.png", "b.png"))
    (names / "gt" / "c.png").write_bytes((names / "gt" / "a.png").read_bytes())
    (names / "lq" / "d.png").write_bytes((names / "lq" / "a.png").read_bytes())
    cases.append((names, "only in gt/: c.png; only in lq/: d.png"))
    cases.append((_pack(tmp_path / "size", lr_size=16), "lq/a.png is 16 x 16, but gt/a.png is 32 x 32"))
    broken = _pack(tmp_path / "broken")
    (broken / "lq" / "b.png").write_bytes(b"not a png")
    cases.append((broken, "cannot read lq/b.png"))
    for folder, message in cases:
        with pytest.raises(PackError, match=message.replace("*", r"\*").replace(".", r"\.")):
            load_pack(folder, scale=4)
    with pytest.raises(PackError, match="multiples of 64"):
        load_pack(tmp_path / "ref", scale=4, multiple=64)


def test_pack_metrics_are_checked_at_compile_time(write_plan, tmp_path):
    base = "plan p\nsteps 10\nloss v vpred\n{}\nstage A 0..: v 1\nkeep best 1 by max pack.psnr\n"
    with pytest.raises(PlanError) as err:
        compile_plan(write_plan(base.format("eval every=5")))
    (found,) = err.value.diagnostics
    assert found.message == "unknown validation image 'pack'" and "give 'eval ... pack=DIR'" in found.hint
    graph = compile_plan(write_plan(base.format(f"eval every=5 pack={tmp_path} pack_limit=2")))
    assert str(graph.keep.metric) == "pack.psnr"


def test_a_run_validates_on_its_pack_and_evaluate_scores_it_offline(photos, tmp_path, capsys, monkeypatch):
    """The acceptance: pack make on photographs, a run with eval pack=, then evaluate --format json."""
    from matplotlib.figure import Figure

    titles, savefig = [], Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda fig, *a, **k: titles.append(fig.get_suptitle()) or savefig(fig, *a, **k)
    )
    pack = tmp_path / "pack"
    assert main(["pack", "make", str(photos), str(pack), "--n", "3", "--size", "64"]) == 0
    plan = tiny_plan(
        tmp_path / "p", steps=4, ckpt=2, extra=f"eval every=2 steps=2 size=32 lpips=off pack={pack} pack_limit=2\n"
    )
    plan.write_text(plan.read_text() + "keep best 1 by max pack.psnr\n")
    run_plan(compile_plan(plan), tmp_path / "run", quiet=True)
    names = sorted(e["name"] for e in json.loads((pack / "manifest.json").read_text())["images"])
    evals = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 4]
    for e in evals:
        assert sorted(e["pack"]["images"]) == names[:2]  # pack_limit=2
        assert set(e["pack"]["mean"]) >= {"psnr", "ssim", "esr", "fhr"}
        assert e["pack"]["bicubic"]["mean"]["psnr"] > e["pack"]["mean"]["psnr"]  # 4 steps: bicubic wins
        assert set(e["images"]) == {"high_texture", "low_texture", "defocus"}  # the roles still shown
    assert (tmp_path / "run" / "best").is_dir()

    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--pack", str(pack), "--format", "json", "--steps", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 4 and result["ema"] is True
    assert sorted(result["images"]) == names
    for row in [result["mean"], result["bicubic"]["mean"], *result["images"].values()]:
        assert all(isinstance(row[k], float) for k in ("psnr", "ssim", "esr", "fhr"))
    assert result["worst_to_best"][0] == min(result["images"], key=lambda n: result["images"][n]["psnr"])
    folder = tmp_path / "run" / "evaluate" / "pack-step-00000004"
    assert (folder / "worst-best.png").is_file() and len(list((folder / "sr").iterdir())) == 3
    assert "validation after 4 steps" in titles and "pack: the 3 worst and best by PSNR (step 4)" in titles
    # the in-run eval and the offline one score the same checkpoint the same way
    in_run = evals[-1]["pack"]["images"][names[0]]["psnr"]
    assert result["images"][names[0]]["psnr"] == pytest.approx(in_run, abs=1e-4)

    assert main(["evaluate", str(tmp_path / "run"), "--pack", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
