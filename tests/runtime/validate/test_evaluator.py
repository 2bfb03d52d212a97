"""Validation: fixed inputs, deterministic sampling, eval.jsonl and pictures."""

import json

import pytest
import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.runtime.seeds import generator
from ditsr_plan.runtime.validate.evaluator import Evaluator
from ditsr_plan.runtime.validate.images import EvalImagesError, eval_images, pretrained_lpips
from ditsr_plan.runtime.validate.metrics import all_metrics
from ditsr_plan.settings.schemas import BicubicDegrade, Diffusion, Eval, HighorderDegrade
from ditsr_plan.testing import tiny_plan, tiny_trainer

torch.set_num_threads(2)
HIGHORDER = HighorderDegrade()
BICUBIC = BicubicDegrade()
REFERENCE_SCHEDULE = Diffusion(train_steps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
EVAL = Eval(every=2, sampler="ddim", steps=10, images="builtin", size=64, lq_init=0.0, cfg=1.0, seed=0, lpips="off")


def test_builtin_images_have_their_roles_and_a_fixed_lr():
    a = eval_images("builtin", 64, 16, 4, HIGHORDER, seed=3)
    b = eval_images("builtin", 64, 16, 4, HIGHORDER, seed=3)
    assert [i.role for i in a] == ["high_texture", "low_texture", "defocus"]
    for x, y in zip(a, b, strict=True):
        assert x.gt.shape == x.lr_up.shape == (1, 3, 64, 64)
        assert torch.equal(x.lr_up, y.lr_up)
    # the low-texture crop has far less high-frequency content than the high-texture one
    from ditsr_plan.runtime.validate.metrics import _laplacian_abs

    assert _laplacian_abs(a[1].gt).mean() < 0.2 * _laplacian_abs(a[0].gt).mean()


def test_user_images_with_roles(tmp_path):
    from PIL import Image

    Image.new("RGB", (70, 50), (10, 200, 30)).save(tmp_path / "a.png")
    images = eval_images(f"mine={tmp_path / 'a.png'}", 64, 16, 4, BICUBIC, 0)
    assert images[0].role == "mine" and images[0].gt.shape == (1, 3, 48, 64)
    with pytest.raises(EvalImagesError, match="not ROLE=PATH"):
        eval_images("nonsense", 64, 16, 4, BICUBIC, 0)


def test_sampling_is_deterministic_and_cfg_doubles_the_work(tmp_path):
    trainer = tiny_trainer(tmp_path)
    calls = {"n": 0}
    trainer.model.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    ev = Evaluator(trainer, EVAL, tmp_path)
    image = ev.images[2]
    first = ev.sample(image.lr_up)
    assert calls["n"] == 10  # lq_init=0: from pure noise, every step
    assert torch.equal(first, ev.sample(image.lr_up))
    calls["n"] = 0
    Evaluator(trainer, EVAL.model_copy(update={"cfg": 3.0}), tmp_path).sample(image.lr_up)
    assert calls["n"] == 20  # conditional and unconditional predictions


@pytest.mark.parametrize(("steps", "strength"), [(10, 0.2), (20, 0.1), (50, 0.1), (50, 0.5)])
def test_lq_init_is_the_fraction_of_the_schedule_skipped(tmp_path, steps, strength):
    """The reference's get_lq_init_latents, written out independently with diffusers' DDIMScheduler:
    set_timesteps(steps); ts descending; start = round(strength * (len(ts) - 1)); the LR latent is noised
    to ts[start] and sampling runs ts[start:]."""
    from diffusers import DDIMScheduler

    trainer = tiny_trainer(tmp_path)
    ev = Evaluator(trainer, EVAL.model_copy(update={"steps": steps, "lq_init": strength}), tmp_path)
    image = ev.images[2]
    seen = []

    def record(module, args):
        seen.append((args[0].clone(), int(args[2][0])))

    handle = trainer.model.register_forward_pre_hook(record)
    ev.sample(image.lr_up)
    handle.remove()

    reference = DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        prediction_type="v_prediction",
        clip_sample=False,
    )
    reference.set_timesteps(steps)
    ts = reference.timesteps
    start = round(strength * (len(ts) - 1))
    assert [t for _, t in seen] == ts[start:].tolist()
    z_lr = trainer.latent.encode(image.lr_up)
    noise = torch.randn(z_lr.shape, generator=generator(EVAL.seed, "eval-noise"))
    expected = reference.add_noise(z_lr, noise, ts[start : start + 1])
    assert torch.allclose(seen[0][0], expected, atol=1e-6)


def test_lq_init_start_timesteps_of_the_docs():
    """docs/metrics.md: lq_init=0.1 starts at t=850 with 20 steps (18 run) and t=880 with 50 (45 run)."""
    from ditsr_plan.runtime.train.diffusion import make_scheduler
    from ditsr_plan.runtime.validate.sampler import lq_init_start

    sched = make_scheduler("ddim", REFERENCE_SCHEDULE)
    for steps, t, run in ((20, 850, 18), (50, 880, 45)):
        sched.set_timesteps(steps)
        start = lq_init_start(steps, 0.1)
        assert int(sched.timesteps[start]) == t and steps - start == run


def test_train_and_eval_schedulers_share_the_plans_noise_schedule(tmp_path):
    """The DDPM scheduler of training and the DDIM one of validation are built from the same settings."""
    from ditsr_plan.runtime.train.diffusion import make_scheduler

    for settings in (
        REFERENCE_SCHEDULE,
        Diffusion(train_steps=500, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    ):
        train, sample = make_scheduler("ddpm", settings), make_scheduler("ddim", settings)
        assert torch.equal(train.alphas_cumprod, sample.alphas_cumprod)
        assert len(train.betas) == settings.train_steps
    linear = make_scheduler("ddpm", REFERENCE_SCHEDULE)
    assert torch.allclose(linear.betas, torch.linspace(1e-4, 0.02, 1000))  # PixArt's IDDPM schedule
    trainer = tiny_trainer(tmp_path)  # the plan's defaults reach the trainer
    assert torch.allclose(trainer.diffusion.scheduler.betas, torch.linspace(1e-4, 0.02, 1000))


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
    fhrs = [r["fhr"] for r in lines[-1]["images"].values()]
    assert mean["fhr"] == pytest.approx((fhrs[0] * fhrs[1] * fhrs[2]) ** (1 / 3))  # ratios: geometric mean
    # the bicubic baseline: the metrics of the LR the model is given, the same in every line
    trainer = tiny_trainer(tmp_path / "t")
    ev = Evaluator(trainer, EVAL.model_copy(update={"size": 64}), tmp_path / "e")
    for line in lines:
        assert set(line["bicubic"]) == {"mean", "high_texture", "low_texture", "defocus"}
        for image in ev.images:
            expected = all_metrics(image.lr_up, image.gt, 4)[0]
            assert line["bicubic"][image.role] == pytest.approx(expected)
        roles = [line["bicubic"][image.role]["psnr"] for image in ev.images]
        assert line["bicubic"]["mean"]["psnr"] == pytest.approx(sum(roles) / 3)
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
