"""Every term kind: its value matches an independent computation, and it reaches the generator."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ditsr_plan.runtime.train.terms import StepTensors
from ditsr_plan.runtime.train.terms.patchgan import NLayerDiscriminator, r1_penalty
from ditsr_plan.runtime.train.terms.regions import edge_loss, edge_mask_from_gt, flat_loss, luma
from ditsr_plan.runtime.train.terms.vpred import min_snr_weight
from ditsr_plan.settings.schemas import Eval
from ditsr_plan.settings.schemas import Flat as FlatSettings
from ditsr_plan.settings.schemas import PatchGan as GanSettings
from ditsr_plan.testing import tiny_trainer

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return tiny_trainer(tmp_path_factory.mktemp("terms"))


@pytest.fixture(scope="module")
def step(trainer):
    batch = trainer.data.batch(3)
    return batch, trainer.forward(batch, 3, 0, decode=True)


# ---- independent computations ----------------------------------------------------------------------


def test_min_snr_weights_match_diffusers_snr_for_both_formulas(trainer):
    from diffusers.training_utils import compute_snr

    t = torch.tensor([0, 10, 100, 500, 999])
    ac = trainer.diffusion.scheduler.alphas_cumprod[t].double()
    snr = ac / (1 - ac)
    ours = compute_snr(trainer.diffusion.scheduler, t).double()
    assert torch.allclose(ours, snr, rtol=1e-5)
    assert torch.allclose(min_snr_weight(ours, 5, "v"), torch.clamp(snr, max=5) / (snr + 1), rtol=1e-5)
    assert torch.allclose(min_snr_weight(ours, 5, "eps"), torch.clamp(snr, max=5) / snr, rtol=1e-5)
    assert torch.equal(min_snr_weight(ours, 0, "v"), torch.ones_like(ours))


def test_vpred_value(trainer):
    g = torch.Generator().manual_seed(0)
    v, v_hat = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([5, 400, 900])
    s = StepTensors(t=t, v=v, v_hat=v_hat, x0=v, x0_hat=v)
    ac = trainer.diffusion.scheduler.alphas_cumprod[t].double()
    snr = ac / (1 - ac)
    expected = ((v_hat - v).double() ** 2).mean(dim=(1, 2, 3)) * torch.clamp(snr, max=5) / (snr + 1)
    assert float(trainer.terms["v"](s)) == pytest.approx(float(expected.mean()), rel=1e-5)


def test_latent_l1_value(trainer):
    x0, x0_hat = torch.zeros(1, 2, 2, 2), torch.arange(8.0).view(1, 2, 2, 2)
    s = StepTensors(t=torch.tensor([1]), v=x0, v_hat=x0, x0=x0, x0_hat=x0_hat)
    assert float(trainer.terms["latent_l1"](s)) == pytest.approx(3.5)


def _sobel_numpy(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel by hand, edge-padded like kornia's default (replicate)."""
    p = np.pad(y, 1, mode="edge")
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    gx = sum(kx[i, j] * p[i : i + y.shape[0], j : j + y.shape[1]] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * p[i : i + y.shape[0], j : j + y.shape[1]] for i in range(3) for j in range(3))
    return gx, gy


def _hand_images():
    yy, xx = np.mgrid[0:32, 0:32]
    gt = np.where(xx < 16, 0.1, 0.9) * np.ones((3, 32, 32))  # a vertical edge, flat on both sides
    pred = gt + 0.05 * np.sin(xx * 1.3 + yy * 0.7)  # texture everywhere
    to_t = lambda a: torch.tensor(a * 2 - 1, dtype=torch.float32)[None]  # noqa: E731
    return gt, pred, to_t(gt), to_t(pred)


def test_edge_mask_and_region_losses_match_a_hand_computation():
    gt, pred, gt_t, pred_t = _hand_images()
    w = np.array([0.2989, 0.5870, 0.1140])[:, None, None]
    y_gt, y_pred = (gt * w).sum(0), (pred * w).sum(0)
    gx, gy = _sobel_numpy(y_gt)
    mag = np.sqrt(gx**2 + gy**2 + 1e-6)
    mask = np.clip(mag / (np.quantile(mag, 0.9) + 1e-6), 0, 1) ** 0.5
    ours = edge_mask_from_gt(gt_t, 0.9, 0.5)[0, 0].double().numpy()
    assert np.allclose(ours, mask, atol=1e-4)
    assert torch.allclose(luma(gt_t)[0, 0].double(), torch.tensor(y_gt), atol=1e-5)

    pgx, pgy = _sobel_numpy(y_pred)
    edge = mask * (np.abs(pgx - gx) + np.abs(pgy - gy))
    m = torch.tensor(mask, dtype=torch.float32)[None, None]
    assert float(edge_loss(pred_t, gt_t, m, "mask")) == pytest.approx(edge.sum() / mask.sum(), rel=1e-3)
    assert float(edge_loss(pred_t, gt_t, m, "all")) == pytest.approx(edge.mean(), rel=1e-3)

    p = np.pad(y_pred, 1, mode="reflect")  # borders reflected, as kornia's laplacian does
    # the reference scripts' 4-neighbour kernel [[0, 1, 0], [1, -4, 1], [0, 1, 0]] (the default) ...
    lap4 = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * p[1:-1, 1:-1]
    # ... and kornia's 8-neighbour kernel [[1, 1, 1], [1, -8, 1], [1, 1, 1]] (laplacian=8)
    lap8 = sum(p[i : i + 32, j : j + 32] for i in range(3) for j in range(3)) - 9 * p[1:-1, 1:-1]
    for neighbours, lap in ((4, lap4), (8, lap8)):
        flat = (1 - mask) * np.abs(lap)
        expected = flat.sum() / (1 - mask).sum()
        assert float(flat_loss(pred_t, m, "mask", neighbours)) == pytest.approx(expected, rel=1e-3)
        assert float(flat_loss(pred_t, m, "all", neighbours)) == pytest.approx(flat.mean(), rel=1e-3)
    assert float(flat_loss(pred_t, m, "mask")) == float(flat_loss(pred_t, m, "mask", 4))  # 4 is the default
    assert float(flat_loss(gt_t, m, "mask")) < 0.1 * float(flat_loss(pred_t, m, "mask"))  # GT is flat there


def test_the_flat_terms_laplacian_setting_reaches_the_term(tmp_path):
    """``loss flat flat laplacian=8`` computes with the 8-neighbour kernel; the default is the 4-neighbour one."""
    import skimage.data

    from ditsr_plan.runtime.train.terms.regions import Flat
    from ditsr_plan.runtime.validate.metrics import from_uint8

    gt = from_uint8(skimage.data.chelsea()[:64, :64])
    pred = gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))
    s = StepTensors(torch.tensor([1]), gt, gt, gt, gt, pred_patch=pred, gt_patch=gt)
    settings = {"q": 0.9, "pow": 0.5, "reduce": "mask"}
    four, eight = (Flat("f", FlatSettings(**{**settings, "laplacian": n}), None)(s) for n in (4, 8))
    mask = edge_mask_from_gt(gt)
    assert float(four) == pytest.approx(float(flat_loss(pred, mask, "mask", 4)))
    assert float(eight) == pytest.approx(float(flat_loss(pred, mask, "mask", 8)))
    assert 1.3 < float(eight) / float(four) < 3.0  # the 8-neighbour kernel's values are larger


def test_ffl_lpips_and_gan_values_match_their_packages(trainer, step):
    from focal_frequency_loss import FocalFrequencyLoss

    _, s = step
    s = StepTensors(*(x.detach() for x in (s.t, s.v, s.v_hat, s.x0, s.x0_hat, s.pred_patch, s.gt_patch)))
    pred, gt = (s.pred_patch + 1) / 2, (s.gt_patch + 1) / 2
    mask = edge_mask_from_gt(s.gt_patch)
    expected = FocalFrequencyLoss(alpha=1.0)(pred * mask, gt * mask)
    assert float(trainer.terms["ffl"](s).detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    lp = trainer.terms["lpips"]
    assert float(lp(s).detach()) == pytest.approx(float(lp.lpips(s.pred_patch, s.gt_patch).mean()), rel=1e-6)
    same = StepTensors(s.t, s.v, s.v_hat, s.x0, s.x0_hat, s.gt_patch, s.gt_patch)
    assert float(lp(same)) == pytest.approx(0.0, abs=1e-6)
    gan = trainer.terms["gan"]
    assert float(gan(s).detach()) == pytest.approx(float(-gan.disc(s.pred_patch).mean().detach()), rel=1e-6)


# ---- gradient paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["latent_l1", "lpips", "edge", "flat", "ffl", "gan"])
def test_weighted_term_changes_the_generators_gradient(trainer, name):
    batch = trainer.data.batch(5)

    def grads(weight: float) -> torch.Tensor:
        trainer.model.zero_grad(set_to_none=True)
        s = trainer.forward(batch, 5, 0, decode=True)
        (trainer.terms["v"](s) + weight * trainer.terms[name](s)).backward()
        return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])

    base, with_term = grads(0.0), grads(0.5)
    assert not torch.allclose(base, with_term), f"'{name}' does not reach the generator"


def test_vpred_reaches_the_generator(trainer):
    trainer.model.zero_grad(set_to_none=True)
    s = trainer.forward(trainer.data.batch(5), 5, 0, decode=False)
    trainer.terms["v"](s).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())


# ---- discriminator and EMA -----------------------------------------------------------------------------


GAN_SETTINGS = {
    "layers": 2,
    "ndf": 8,
    "norm": "instance",
    "loss": "hinge",
    "r1": 10.0,
    "r1_every": 4,
    "r1_lazy": "scaled",
    "lr": 1e-4,
    "betas": [0.5, 0.999],
    "wd": 1e-4,
    "d_warmup": 0,
}


def _d_step_gradients(term, pairs, step):
    """The gradients D's optimiser step receives, and the step's stats."""
    captured = {}
    real_step = term.optimizer.step

    def capture(*args, **kwargs):
        captured["grads"] = [p.grad.clone() for p in term.disc.parameters()]
        return real_step(*args, **kwargs)

    term.optimizer.step = capture
    stats = term.train_discriminator(pairs, step=step, lr=1e-4)
    term.optimizer.step = real_step
    return captured["grads"], stats


def _hand_gradients(disc, pairs, total_of):
    disc.zero_grad(set_to_none=True)
    for real, fake in pairs:
        d_real, d_fake = disc(real), disc(fake)
        loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        (total_of(loss, r1_penalty(disc, real)) / len(pairs)).backward()
    return [p.grad.clone() for p in disc.parameters()]


@pytest.mark.parametrize(
    ("lazy", "total_of"),
    [
        # StyleGAN2 / BasicSR: (gamma / 2) R x every added to the D loss
        ("scaled", lambda loss, r1: loss + 10.0 / 2 * r1 * 4),
        # the reference scripts: (D_real + D_fake + gamma R) * 0.5, not multiplied by the interval
        ("unscaled", lambda loss, r1: (loss + 10.0 * r1) * 0.5),
    ],
)
def test_r1_forms_match_their_formulas(lazy, total_of):
    import copy

    from ditsr_plan.runtime.train.terms.patchgan import PatchGan

    torch.manual_seed(0)
    term = PatchGan("gan", GanSettings(**{**GAN_SETTINGS, "r1_lazy": lazy}), None)
    disc = copy.deepcopy(term.disc)
    real, fake = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    penalty = float(r1_penalty(term.disc, real).detach())
    grads, stats = _d_step_gradients(term, [(real, fake)], step=8)
    for ours, theirs in zip(grads, _hand_gradients(disc, [(real, fake)], total_of), strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-7)
    assert stats["r1"] == pytest.approx(penalty, rel=1e-5)
    added = 10.0 / 2 * penalty * 4 if lazy == "scaled" else 10.0 * penalty
    assert stats["r1_weighted"] == pytest.approx(added, rel=1e-5)
    assert term.train_discriminator([(real, fake)], step=9, lr=1e-4)["r1"] is None  # not an R1 step


def test_the_scaled_r1_is_r1_every_over_2_times_the_unscaled_one_relative_to_the_d_loss():
    from ditsr_plan.runtime.train.terms.patchgan import PatchGan

    torch.manual_seed(0)
    real, fake = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    settings = {**GAN_SETTINGS, "r1_every": 16}
    scaled = PatchGan("gan", GanSettings(**settings), None)
    unscaled = PatchGan("gan", GanSettings(**{**settings, "r1_lazy": "unscaled"}), None)
    unscaled.disc.load_state_dict(scaled.disc.state_dict())
    a = scaled.train_discriminator([(real, fake)], step=16, lr=1e-4)
    b = unscaled.train_discriminator([(real, fake)], step=16, lr=1e-4)
    assert a["r1_weighted"] / b["r1_weighted"] == pytest.approx(8.0, rel=1e-5)


def test_the_discriminator_sees_every_micro_batch():
    import copy

    from ditsr_plan.runtime.train.terms.patchgan import PatchGan

    torch.manual_seed(0)
    term = PatchGan("gan", GanSettings(**GAN_SETTINGS), None)
    disc = copy.deepcopy(term.disc)
    pairs = [(torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1) for _ in range(2)]
    grads, _ = _d_step_gradients(term, pairs, step=4)
    hand = _hand_gradients(disc, pairs, lambda loss, r1: loss + 10.0 / 2 * r1 * 4)
    for ours, theirs in zip(grads, hand, strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-7)
    only_first = _hand_gradients(disc, pairs[:1], lambda loss, r1: loss + 10.0 / 2 * r1 * 4)
    assert not all(torch.allclose(a, b) for a, b in zip(grads, only_first, strict=True))


def test_r1_penalty_by_hand():
    disc = NLayerDiscriminator(2, 8, "none")
    real = torch.rand(1, 3, 32, 32)
    x = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(disc(x).sum(), x)
    assert float(r1_penalty(disc, real).detach()) == pytest.approx(float(g.pow(2).sum()), rel=1e-5)


def test_ema_without_warmup_follows_its_formula():
    from ditsr_plan.runtime.train.ema import Ema

    model = torch.nn.Linear(2, 1)
    ema = Ema(model, decay=0.9, start=2, every=2, warmup=False)
    history = []
    for step in range(6):
        with torch.no_grad():
            model.weight.add_(1.0)
        before = ema.shadow["weight"].clone()
        ema.update(model, step)
        history.append((step, before, model.weight.clone(), ema.shadow["weight"].clone()))
    for step, before, weights, after in history:
        if step < 2:
            assert torch.equal(after, weights)  # copies before 'start'
        elif (step - 2) % 2 == 0:
            assert torch.allclose(after, 0.9 * before + 0.1 * weights)
        else:
            assert torch.equal(after, before)  # only every 2 steps


def test_ema_with_warmup_equals_diffusers_ema_model():
    """The default EMA against diffusers' EMAModel(decay=0.999) stepped on the same parameter sequence:
    decay_s = min(0.999, (1 + s) / (10 + s)), the first update copies."""
    from diffusers.training_utils import EMAModel

    from ditsr_plan.runtime.train.ema import Ema, ema_decay

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 3))
    ours = Ema(model, decay=0.999)
    theirs = EMAModel(model.parameters(), decay=0.999)
    g = torch.Generator().manual_seed(1)
    for step in range(300):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        ours.update(model, step)
        theirs.step(model.parameters())
        if step in (0, 1, 5, 50, 299):
            for a, b in zip(ours.shadow.values(), theirs.shadow_params, strict=True):
                assert torch.allclose(a, b, rtol=0, atol=1e-7), step
    assert ema_decay(0.999, 0, True) == 0.0 and ema_decay(0.999, 1, True) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 20_000, True) == 0.999 and ema_decay(0.999, 0, False) == 0.999
    assert ours.state() == {"updates": 300}


def test_ema_warmup_keeps_little_of_the_initialisation():
    """After 200 steps the warmed-up EMA holds < 1 % of the initial weights (decay from s = 0: 82 %)."""
    from ditsr_plan.runtime.train.ema import Ema

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    warm, cold = Ema(model, 0.999), Ema(model, 0.999, warmup=False)
    with torch.no_grad():
        model.weight.fill_(0.0)  # the trained weights moved away from the initialisation (1.0)
    for step in range(200):
        warm.update(model, step)
        cold.update(model, step)
    assert float(warm.shadow["weight"]) < 0.01
    assert float(cold.shadow["weight"]) == pytest.approx(0.999**200, rel=1e-4)  # 0.82


def test_a_patch_too_small_for_lpips_alex_stops_before_step_0(tmp_path):
    from ditsr_plan.runtime.train.terms import TermSetupError
    from ditsr_plan.testing import ALL_TERMS

    with pytest.raises(TermSetupError, match="cannot run on a 16 px pixel patch"):
        tiny_trainer(tmp_path, terms=ALL_TERMS.replace("net=vgg", "net=alex"))


def test_nonsaturating_gan_losses():
    from ditsr_plan.runtime.train.terms.patchgan import PatchGan

    torch.manual_seed(1)
    settings = {**GAN_SETTINGS, "norm": "none", "loss": "nonsat", "r1": 0.0, "r1_every": 1, "wd": 0.0}
    term = PatchGan("gan", GanSettings(**settings), None)
    fake, real = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    s = StepTensors(torch.tensor([1]), fake, fake, fake, fake, pred_patch=fake, gt_patch=real)
    with torch.no_grad():
        expected_g = F.softplus(-term.disc(fake)).mean()
        expected_d = F.softplus(-term.disc(real)).mean() + F.softplus(term.disc(fake)).mean()
    assert float(term(s).detach()) == pytest.approx(float(expected_g), rel=1e-6)
    stats = term.train_discriminator([(real, fake)], step=1, lr=1e-4)
    assert stats["loss"] == pytest.approx(float(expected_d), rel=1e-6) and stats["r1"] is None


def test_gradient_diagnostics_norms_and_cosines():
    from ditsr_plan.runtime.train.checks import gradient_diagnostics

    v_hat = torch.randn(2, 4, 4, 4, requires_grad=True)
    s = StepTensors(torch.tensor([1, 2]), v_hat, v_hat, v_hat, v_hat)
    raw = {"a": v_hat.sum(), "b": -(v_hat.sum()), "c": (v_hat * torch.arange(4.0).view(1, 4, 1, 1)).sum()}
    d = gradient_diagnostics(raw, {"a": 0.5, "b": 2.0, "c": 1.0}, s)
    n = v_hat.numel() ** 0.5
    assert d["norm"]["a"] == pytest.approx(0.5 * n) and d["norm"]["b"] == pytest.approx(2.0 * n)
    assert d["cosine"]["a|b"] == pytest.approx(-1.0)  # pulling in opposite directions
    expected = float((torch.arange(4.0).sum() * 32) / (n * (torch.arange(4.0) ** 2).sum().sqrt() * 32**0.5))
    assert d["cosine"]["a|c"] == pytest.approx(expected, rel=1e-5)


def test_the_generator_is_told_the_lr_augmentation_level(tmp_path):
    """Level 0 is the transformer alone (the embedding is 0 there by construction and starts at 0
    everywhere); once trained, two levels give different predictions for the same input."""
    from ditsr_plan.runtime.run import run_plan
    from ditsr_plan.testing import tiny_plan

    trainer = tiny_trainer(tmp_path)
    model = trainer.model.eval()
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, 48, 8, 8, generator=g), torch.randn(2, 48, 8, 8, generator=g)
    t = torch.tensor([500, 900])
    level = lambda v: torch.full((2,), v)  # noqa: E731
    with torch.no_grad():
        alone = model.dit(torch.cat([x, cond], 1), timestep=t, class_labels=torch.zeros(2, dtype=torch.long)).sample
        assert torch.equal(model(x, cond, t, level(0.0)), alone)
        assert torch.equal(model(x, cond, t, level(0.1)), alone)  # untrained: the embedding starts at 0
    plan = tiny_plan(tmp_path, steps=6, stages="stage A 0..: v 1; latent_l1 1\n")
    run_plan(compile_plan_for(plan), tmp_path / "run")
    from safetensors.torch import load_file

    trained = tiny_trainer(tmp_path / "again").model.eval()
    trained.load_state_dict(load_file(tmp_path / "run" / "checkpoints" / "step-00000006" / "generator.safetensors"))
    with torch.no_grad():
        a, b = trained(x, cond, t, level(0.0)), trained(x, cond, t, level(0.1))
        assert not torch.allclose(a, b)
        alone = trained.dit(torch.cat([x, cond], 1), timestep=t, class_labels=torch.zeros(2, dtype=torch.long)).sample
        assert torch.allclose(a, alone, atol=1e-6)  # level 0 (validation) needs nothing but the transformer


def compile_plan_for(path):
    from ditsr_plan.compiler import compile_plan

    return compile_plan(path)


def test_residual_target_diffuses_hr_minus_lr_and_adds_the_lr_back(tmp_path):
    """``diffusion target=residual``: the noise is added to (HR latent - LR latent); the reconstruction that the
    terms see is the whole HR latent again; validation adds the LR latent back before decoding."""
    from pathlib import Path

    from ditsr_plan.runtime.validate.evaluator import Evaluator

    trainer = tiny_trainer(tmp_path, extra="diffusion target=residual\n")
    batch = trainer.data.batch(3)
    seen = {}
    add_noise = trainer.diffusion.add_noise
    trainer.diffusion.add_noise = lambda x0, noise, t: (
        seen.setdefault("x0", x0) if False else add_noise(seen.setdefault("x0", x0), noise, t)
    )
    s = trainer.forward(batch, 3, 0, decode=False)
    hr_latent, lr_latent = trainer.latent.encode(batch.hr), trainer.latent.encode(batch.lr_up)
    assert torch.allclose(seen["x0"], hr_latent - lr_latent)
    assert torch.equal(s.x0, hr_latent)
    sigma = trainer.diffusion.sigma[s.t].view(-1, 1, 1, 1)
    assert torch.allclose(s.x0_hat - s.x0, -sigma * (s.v_hat - s.v), atol=1e-5)  # the residual's error, unchanged
    # sampling: a model whose every prediction is the residual 0 (v = alpha x_t / sigma) gives the LR itself
    eval_settings = Eval(every=1, sampler="ddim", steps=3, images="builtin", size=64, lq_init=0.0, cfg=1.0, lpips="off")
    ev = Evaluator(trainer, eval_settings, Path(tmp_path) / "e")
    d = trainer.diffusion
    trainer.model.forward = lambda x, cond, t, aug: d._at(d.alpha, t) * x / d._at(d.sigma, t)
    image = ev.images[0]
    assert torch.allclose(ev.sample(image.lr_up), image.lr_up, atol=1e-5)
