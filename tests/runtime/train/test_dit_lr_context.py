"""model dit lr_context=N (a 3x3 convolution of the LR latent joins the DiT's input) and diffusion t_min (the
training timesteps drawn from t_min up): the two settings the demo beats bicubic with."""

import numpy as np
import torch
from PIL import Image

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.train.diffusion import Diffusion
from ditsr_plan.runtime.train.generators import latent_and_generator
from ditsr_plan.runtime.train.generators.dit import SRDiT
from ditsr_plan.runtime.upscale.denoiser import ExportedDenoiser, describe
from ditsr_plan.runtime.upscale.pipeline import DiTSRPipeline
from ditsr_plan.settings import schemas
from ditsr_plan.testing import tiny_plan

torch.set_num_threads(2)


def model(lr_context: int) -> SRDiT:
    torch.manual_seed(0)
    return SRDiT(48, 8, schemas.DitModel(depth=1, heads=2, head_dim=32, patch=1, lr_context=lr_context))


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 48, 8, 8, generator=g), torch.randn(2, 48, 8, 8, generator=g), torch.tensor([999, 10])


def test_the_context_channels_join_the_input_and_train():
    assert model(0).lr_context is None and model(0).dit.config.in_channels == 96
    net = model(16)
    assert net.dit.config.in_channels == 96 + 16 and net.lr_context is not None
    x, cond, t = inputs()
    before = net.lr_context.weight.detach().clone()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(x, cond, t).square().mean().backward()
    assert net.lr_context.weight.grad is not None and net.lr_context.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(net.lr_context.weight, before)
    # the LR of a neighbouring latent pixel reaches a token through the convolution, not only by attention
    shifted = cond.clone()
    shifted[:, :, 3, 4] += 1
    out = net.lr_context(cond)
    moved = (net.lr_context(shifted) - out).abs().sum(dim=(0, 1)) > 0
    assert moved[2:5, 3:6].all() and not moved[6:, :].any()


def test_an_exported_denoiser_with_the_context_predicts_what_the_model_does():
    net = model(8).eval()
    x, cond, t = inputs()
    spec, transformer, extra = describe(net)
    assert spec["lr_context"] == 8 and set(extra) == {"lr_context.weight", "lr_context.bias"}
    exported = ExportedDenoiser(spec, transformer, extra).eval()
    with torch.no_grad():
        assert torch.allclose(exported(x, cond, t), net(x, cond, t), atol=1e-6)
    assert set(exported.extra_tensors()) == set(extra)


def test_a_saved_pipeline_with_the_context_loads_back_to_the_same_image(tmp_path):
    graph = compile_plan(tiny_plan(tmp_path / "plan"), overrides=("model.lr_context=8",))
    torch.manual_seed(0)
    latent, net = latent_and_generator(graph, torch.device("cpu"))
    with torch.no_grad():  # a context that matters: the default init of the DiT's input is not zero
        net.lr_context.weight.normal_(0, 0.5)
    data = graph.block("data")
    pipe = DiTSRPipeline(net, latent, graph.block("diffusion"), schemas.Eval(steps=1), data.scale, data.crop)
    image = Image.fromarray((np.random.RandomState(2).rand(12, 15, 3) * 255).astype("uint8"))
    [before] = pipe(image, num_inference_steps=1, generator=3)
    loaded = DiTSRPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "exp"))
    [after] = loaded(image, num_inference_steps=1, generator=3)
    assert np.array_equal(np.asarray(before), np.asarray(after))
    with torch.no_grad():
        net.lr_context.weight.zero_()
    [without] = pipe(image, num_inference_steps=1, generator=3)
    assert not np.array_equal(np.asarray(without), np.asarray(after))  # the saved context was used


def test_training_timesteps_start_at_t_min():
    def drawn(t_min: int) -> torch.Tensor:
        diffusion = Diffusion(schemas.Diffusion(t_min=t_min), torch.device("cpu"))
        g = torch.Generator().manual_seed(0)
        return torch.cat([diffusion.sample_timesteps(1, g, torch.device("cpu")) for _ in range(2000)])

    everywhere, high = drawn(0), drawn(900)
    assert everywhere.min() < 10 and everywhere.max() == 999
    assert high.min() == 900 and high.max() == 999
