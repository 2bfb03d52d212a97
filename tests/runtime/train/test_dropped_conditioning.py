"""What a dropped training sample loses (``diffusion dropout_drops=lr|style``) and what the unconditional
branch of validation guidance drops (``eval guidance_drops=lr|adapter``), on a batch."""

from __future__ import annotations

import pytest
import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.diagnostics import PlanError
from ditsr_plan.runtime.train.device import place
from ditsr_plan.runtime.validate.sampler import sample
from ditsr_plan.settings import schemas
from ditsr_plan.testing import make_pixart, pretrained_plan, tiny_plan, trainer_for

torch.set_num_threads(2)

PYRAMID = "cond=concat+adapter adapter=pyramid pyramid_width=32 pyramid_heads=default"


class Recorder(torch.nn.Module):
    """Stands in for the generator: records each call's LR latent, level and keyword arguments."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor, dict]] = []

    def forward(self, noisy, lr_latent, t, aug_level=None, **kw):
        self.calls.append((lr_latent.clone(), aug_level.clone(), kw))
        return torch.zeros_like(noisy)


def _dropout_call(tmp_path, drops: str):
    folder = make_pixart(tmp_path)
    extra = f"diffusion cond_dropout=1 dropout_drops={drops}\n"
    trainer = trainer_for(pretrained_plan(tmp_path, f"model pixart path={folder} {PYRAMID}", extra=extra))
    trainer.net = recorder = Recorder()
    batch = trainer.data.batch(0)
    trainer.forward(batch, 0, 0, decode=False)
    return trainer, batch, recorder.calls[0]


def test_dropout_drops_lr_zeroes_the_whole_lr_latent_and_its_level(tmp_path):
    _, _, (lr, level, kw) = _dropout_call(tmp_path, "lr")
    assert torch.all(lr == 0) and torch.all(level == 0) and "style_keep" not in kw


def test_dropout_drops_style_keeps_the_lr_latent_and_drops_only_the_style(tmp_path):
    trainer, batch, (lr, level, kw) = _dropout_call(tmp_path, "style")
    assert lr.abs().sum() > 0 and torch.all(kw["style_keep"] == 0)
    # the LR the model sees is the batch's LR latent (plus its augmentation noise), not zeros
    clean = trainer.latent.encode(trainer.data.lr_up(batch, batch.hr))
    assert float((lr - clean).abs().max()) < 1 and level.shape == (lr.shape[0],)


def _sample_calls(drops: str) -> list:
    recorder = Recorder()
    latent = schemas.PixelUnshuffleLatent(factor=2)
    from ditsr_plan.runtime.train.latent import build_latent

    settings = schemas.Eval(steps=2, cfg=3.0, lq_init=0.0, guidance_drops=drops)
    lr_up = torch.rand(1, 3, 16, 16) * 2 - 1
    sample(recorder, build_latent(latent), schemas.Diffusion(), lr_up, settings, place("cpu", "fp32"), crop=32)
    return recorder.calls


def test_guidance_drops_lr_zeroes_the_lr_in_the_unconditional_branch():
    calls = _sample_calls("lr")
    (cond_lr, _, cond_kw), (uncond_lr, _, uncond_kw) = calls[:2]
    assert cond_lr.abs().sum() > 0 and torch.all(uncond_lr == 0) and uncond_kw == {} == cond_kw


def test_guidance_drops_adapter_keeps_the_lr_and_turns_the_adapter_off():
    calls = _sample_calls("adapter")
    (cond_lr, _, cond_kw), (uncond_lr, _, uncond_kw) = calls[:2]
    assert torch.equal(cond_lr, uncond_lr) and uncond_kw == {"use_adapter": False} and cond_kw == {}


@pytest.mark.parametrize(
    ("extra", "key"),
    [("diffusion dropout_drops=style\n", "dropout_drops"), ("eval every=2 guidance_drops=adapter\n", "guidance_drops")],
)
def test_dropping_what_the_model_does_not_have_is_a_plan_error(tmp_path, extra, key):
    with pytest.raises(PlanError) as info:
        compile_plan(tiny_plan(tmp_path, extra=extra))
    text = str(info.value)
    assert key in text and "adapter" in text and "tiny.plan:" in text


def test_the_new_keys_at_their_default_keep_the_plan_hash_and_otherwise_change_it(tmp_path):
    """Old plans keep their hashes (and their runs resume): a default written out or left out is the same plan."""
    plain = compile_plan(tiny_plan(tmp_path / "a", extra="eval every=6\n")).hash
    extra = "diffusion dropout_drops=lr\neval every=6 guidance_drops=lr\n"
    written = compile_plan(tiny_plan(tmp_path / "b", extra=extra))
    other = compile_plan(tiny_plan(tmp_path / "c", extra="diffusion cond_dropout=0.2\neval every=6\n"))
    assert written.hash == plain != other.hash
