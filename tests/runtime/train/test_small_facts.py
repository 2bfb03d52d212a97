"""The reference scripts' small facts, each a setting (reference-setup.md, "The model as the scripts built
it"): DDIM ``set_alpha_to_one=False``, the discriminator's InstanceNorm with ``affine=True``, the decoded patch
clamped to [-1, 1] before the pixel losses; the defaults keep the project's behaviour."""

from __future__ import annotations

import torch
from torch import nn

from ditsr_plan.runtime.train.diffusion import make_scheduler
from ditsr_plan.runtime.train.pixel_patch import PixelPatch
from ditsr_plan.runtime.train.terms.patchgan import NLayerDiscriminator
from ditsr_plan.settings import schemas


def test_ddim_set_alpha_to_one():
    scripts = make_scheduler("ddim", schemas.Diffusion(set_alpha_to_one=False))
    default = make_scheduler("ddim", schemas.Diffusion())
    assert float(default.final_alpha_cumprod) == 1.0
    assert float(scripts.final_alpha_cumprod) == float(scripts.alphas_cumprod[0]) < 1.0


def test_discriminator_instance_norm_affine():
    def norms(d: nn.Module) -> list[nn.InstanceNorm2d]:
        return [m for m in d.modules() if isinstance(m, nn.InstanceNorm2d)]

    scripts = NLayerDiscriminator(layers=2, ndf=8, affine=True)
    default = NLayerDiscriminator(layers=2, ndf=8)
    assert norms(scripts) and all(m.affine and m.weight is not None for m in norms(scripts))
    assert all(not m.affine for m in norms(default))
    assert sum(p.numel() for p in scripts.parameters()) == sum(p.numel() for p in default.parameters()) + 2 * (16 + 32)


def test_the_decoded_patch_is_clamped_when_asked():
    def decode(z: torch.Tensor) -> torch.Tensor:  # an overshooting "decoder": 3 x the latent, x1 upsampled
        return 3 * z[:, :3]

    x0 = torch.linspace(-1, 1, 4 * 8 * 8).reshape(1, 4, 8, 8)
    hr = torch.zeros(1, 3, 8, 8)
    clamped, _ = PixelPatch.fitted(8, 0, 8, 1, clamp=True).cut(decode, x0, hr, torch.Generator().manual_seed(0))
    raw, _ = PixelPatch.fitted(8, 0, 8, 1).cut(decode, x0, hr, torch.Generator().manual_seed(0))
    assert raw.abs().max() > 1.5
    assert clamped.abs().max() <= 1 and torch.equal(clamped, raw.clamp(-1, 1))


def test_the_plan_settings_reach_the_runtime(tmp_path):
    from ditsr_plan.testing import tiny_plan, trainer_for

    terms = "loss v vpred\nloss gan patchgan layers=2 ndf=8 norm_affine=true\n"
    plan = tiny_plan(tmp_path, terms=terms, stages="stage A 0..: v 1; gan 0.1\n")
    trainer = trainer_for(plan, overrides=("pixel.clamp=true", "diffusion.set_alpha_to_one=false"))
    assert trainer.patch.clamp
    disc = trainer.terms["gan"].disc
    assert all(m.affine for m in disc.modules() if isinstance(m, nn.InstanceNorm2d))
    assert not trainer.graph.block("diffusion").set_alpha_to_one
