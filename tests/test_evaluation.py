"""Validation: fixed inputs, deterministic sampling, eval.jsonl and pictures."""

import json

import pytest
import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.evaluation import Evaluator, eval_images, pretrained_lpips
from ditsr_plan.runtime.run import run_plan
from tests.runtime_helpers import tiny_plan, tiny_trainer

torch.set_num_threads(2)
EVAL = {
    "every": 2,
    "sampler": "ddim",
    "steps": 10,
    "images": "builtin",
    "size": 64,
    "lq_init": 0.0,
    "cfg": 1.0,
    "seed": 0,
    "lpips": "off",
}


def test_builtin_images_have_their_roles_and_a_fixed_lr():
    a = eval_images("builtin", 64, 16, 4, "highorder", seed=3)
    b = eval_images("builtin", 64, 16, 4, "highorder", seed=3)
    assert [i.role for i in a] == ["high_texture", "low_texture", "defocus"]
    for x, y in zip(a, b, strict=True):
        assert x.gt.shape == x.lr_up.shape == (1, 3, 64, 64)
        assert torch.equal(x.lr_up, y.lr_up)
    # the low-texture crop has far less high-frequency content than the high-texture one
    from ditsr_plan.runtime.metrics import _laplacian_abs

    assert _laplacian_abs(a[1].gt).mean() < 0.2 * _laplacian_abs(a[0].gt).mean()


def test_user_images_with_roles(tmp_path):
    from PIL import Image

    Image.new("RGB", (70, 50), (10, 200, 30)).save(tmp_path / "a.png")
    images = eval_images(f"mine={tmp_path / 'a.png'}", 64, 16, 4, "bicubic", 0)
    assert images[0].role == "mine" and images[0].gt.shape == (1, 3, 48, 64)
    with pytest.raises(ValueError, match="not ROLE=PATH"):
        eval_images("nonsense", 64, 16, 4, "bicubic", 0)


def test_sampling_is_deterministic_and_lq_init_and_cfg_change_the_work(tmp_path):
    trainer = tiny_trainer(tmp_path)
    calls = {"n": 0}
    trainer.ema.model.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))  # evals use the EMA
    ev = Evaluator(trainer, EVAL, tmp_path)
    image = ev.images[2]
    first = ev.sample(image.lr_up)
    assert calls["n"] == 10
    assert torch.equal(first, ev.sample(image.lr_up))
    calls["n"] = 0
    Evaluator(trainer, {**EVAL, "lq_init": 0.2}, tmp_path).sample(image.lr_up)
    assert calls["n"] == 2  # the last fifth of the schedule, from the noised LR latent
    calls["n"] = 0
    Evaluator(trainer, {**EVAL, "cfg": 3.0}, tmp_path).sample(image.lr_up)
    assert calls["n"] == 20  # conditional and unconditional predictions


def test_run_with_eval_writes_metrics_grids_and_strips(tmp_path):
    plan = tiny_plan(tmp_path, steps=4, ckpt=2, extra="eval every=2 steps=3 size=64 lpips=off\n")
    run_dir = tmp_path / "run"
    run_plan(compile_plan(plan), run_dir)
    lines = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    row = lines[-1]["images"]["defocus"]
    assert set(row) == {"psnr", "ssim", "psnr_rgb", "ssim_rgb", "esr", "fhr", "lpips"} and row["lpips"] is None
    mean = lines[-1]["mean"]
    assert mean["psnr"] == pytest.approx(sum(r["psnr"] for r in lines[-1]["images"].values()) / 3)
    for name in ("grid-00000002.png", "grid-00000004.png", "progress-defocus.png", "step-00000004/defocus.png"):
        assert (run_dir / "eval" / name).read_bytes()[:4] == b"\x89PNG", name
    # a resumed run evaluates again after its checkpoint, without duplicating earlier lines
    run_plan(
        compile_plan(tiny_plan(tmp_path, steps=4, ckpt=2, extra="eval every=2 steps=3 size=64 lpips=off\n")),
        run_dir,
        resume=True,
    )
    assert [json.loads(x)["step"] for x in (run_dir / "eval.jsonl").read_text().splitlines()] == [2, 4]


def test_lpips_metric_is_unavailable_without_a_cached_pretrained_trunk(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert pretrained_lpips(torch.device("cpu")) is None
