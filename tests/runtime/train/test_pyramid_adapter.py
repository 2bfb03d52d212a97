"""The reference scripts' pyramid adapter and hybrid injection (``model pixart adapter=pyramid``), checked
against the facts of shared/reference-setup.md ("The model as the scripts built it"), on tiny models and,
for the parameter counts, at PixArt-XL/2 shape on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ditsr_plan.runtime.train.generators.injection import Injection
from ditsr_plan.runtime.train.generators.pretrained import SRTransformer
from ditsr_plan.runtime.train.generators.pyramid import FRONT_DENSE, FeaturePyramid, injected_layers, level_of
from ditsr_plan.runtime.train.generators.pyramid_model import build_pyramid
from ditsr_plan.settings import schemas
from ditsr_plan.testing import make_pixart

torch.set_num_threads(2)

# PixArt-XL-2-512x512's transformer config (diffusers' layout)
XL = {
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "in_channels": 4,
    "out_channels": 8,
    "num_layers": 28,
    "cross_attention_dim": 1152,
    "attention_bias": True,
    "sample_size": 64,
    "patch_size": 2,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "caption_channels": 4096,
}

PYRAMID = "cond=concat+adapter adapter=pyramid pyramid_width=32"


def _settings(folder: Path, **kw) -> schemas.PixartModel:
    values = {"cond": "concat+adapter", "adapter": "pyramid", "pyramid_width": 32, **kw}
    return schemas.PixartModel(path=str(folder), **values)


def _generator(tmp_path: Path, layers: int = 4, **kw) -> SRTransformer:
    folder = make_pixart(tmp_path, num_layers=layers)
    return SRTransformer("pixart", _settings(folder, **kw), 4, 16, 64, "cpu")


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g), torch.tensor([30, 700])


def _base(folder: Path, noisy, t):
    from diffusers import PixArtTransformer2DModel

    base = PixArtTransformer2DModel.from_pretrained(folder).eval()
    added = {"resolution": None, "aspect_ratio": None}
    return base(noisy, encoder_hidden_states=torch.zeros(2, 1, 8), timestep=t, added_cond_kwargs=added).sample[:, :4]


def test_the_injected_blocks_are_front_dense():
    assert injected_layers("front_dense", 28) == [*range(15), 15, 17, 19, 21, 23]
    assert len(FRONT_DENSE) == 20
    assert injected_layers("front_dense", 4) == [0, 1, 2, 3]
    assert injected_layers("all", 3) == [0, 1, 2]
    assert injected_layers("5,1", 8) == [1, 5]
    with pytest.raises(ValueError, match="block 9"):
        injected_layers("9", 8)


def test_the_level_each_layer_reads():
    """Layers 0-7 level 0, 8-14 level 1, 15-21 level 2, 22+ level 3."""
    assert [level_of(i) for i in range(28)] == [0] * 8 + [1] * 7 + [2] * 7 + [3] * 6


def test_every_head_gives_the_token_grid_and_the_style_its_width():
    pyramid = FeaturePyramid(4, 48, injected_layers("front_dense", 28), base=32)
    features, style = pyramid(torch.randn(2, 4, 16, 16))
    assert len(features) == 20 and style.shape == (2, 48)
    assert {tuple(f.shape) for f in features} == {(2, 64, 48)}  # 8 x 8 tokens: the 16 x 16 latent at patch 2
    assert [h.conv.stride for h in pyramid.heads][:9] == [(2, 2)] * 8 + [(1, 1)]  # stride 2 for level 0 only


def test_at_pixart_xl_shape_the_adapter_counts_the_scripts_parameters():
    """The facts: 113.6528M at base width 128 with 20 injected layers; the injection (modulations, gate,
    style MLP, s_layer) about 57.1M trained, the residual projections' frozen bases apart."""
    from diffusers import PixArtTransformer2DModel

    with torch.device("meta"):
        transformer = PixArtTransformer2DModel(**XL)
        settings = schemas.PixartModel(path="x", cond="concat+adapter", adapter="pyramid")
        pyramid, injection = build_pyramid(transformer, settings, 4, 1152)
    assert sum(p.numel() for p in pyramid.parameters()) == 113_652_800
    res_proj = sum(p.numel() for layer in injection.layers for p in layer.res_proj.parameters())
    trained = sum(p.numel() for p in injection.parameters()) - res_proj
    assert trained == 57_116_181
    assert res_proj == 20 * (1152 * 1152 + 1152)


@pytest.mark.parametrize("heads", ["zero", "default"])
def test_at_step_0_the_generator_is_the_base_model(tmp_path, heads):
    """Zero-initialised projections (and style MLP output): whatever the heads, the LR and its level, the
    output is the base's."""
    model = _generator(tmp_path, lora=4, lora_targets="to_q,to_k,to_v,to_out.0,res_proj", pyramid_heads=heads)
    noisy, lr, t = _inputs()
    with torch.no_grad():
        ours = model.eval()(noisy, lr, t, torch.tensor([0.0, 0.1]))
    assert torch.allclose(ours, _base(tmp_path / "pixart", noisy, t), atol=1e-6)


def test_the_gate_is_s_layer_times_tanh_of_an_mlp_of_t():
    torch.manual_seed(0)
    injection = Injection(16, [0, 3])
    last = injection.gate.second
    assert torch.all(last.bias == 0) and 0.01 < float(last.weight.detach().std()) < 0.03  # normal std 0.02
    assert all(float(layer.scale.detach()) == 1.0 for layer in injection.layers)  # s_layer starts at 1
    with torch.no_grad():
        injection.layers[1].scale.fill_(0.5)
    t = torch.randn(3, 16)
    expected = 0.5 * torch.tanh(last(torch.nn.functional.silu(injection.gate.first(t))))
    assert torch.allclose(injection.gate_value(1, t).view(3, 1), expected, atol=1e-6)


def test_the_injection_modulates_the_first_norm_and_adds_the_gated_residual():
    """h * (1 + a scale) + a shift on the norm output; x + a res_proj(f) on the block input."""
    from ditsr_plan.runtime.train.generators.injection import InjectionState

    torch.manual_seed(0)
    injection = Injection(16, [0])
    layer = injection.layers[0]
    for linear in (layer.modulation, layer.res_proj):
        torch.nn.init.normal_(linear.weight)
    f, t, h = torch.randn(2, 5, 16), torch.randn(2, 16), torch.randn(2, 5, 16)
    injection.state = InjectionState([f], None, t)
    a = injection.gate_value(0, t)
    shift, scale = layer.modulation(torch.nn.functional.layer_norm(f, (16,))).chunk(2, dim=-1)
    assert torch.allclose(injection.modulate(0, h), h * (1 + a * scale) + a * shift, atol=1e-5)
    assert torch.allclose(injection.residual(0, h), h + a * layer.res_proj(f), atol=1e-5)


def _train_a_step(model: SRTransformer, seed: int) -> None:
    noisy, lr, t = _inputs(seed)
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    opt.zero_grad()
    model.train()(noisy, lr, t).square().mean().backward()
    opt.step()


def test_zero_heads_leave_the_spatial_path_without_gradient_and_default_heads_learn(tmp_path):
    """The finding behind lint A001: with the scripts' zero heads the heads and the projections never move."""
    targets = "to_q,to_k,to_v,to_out.0,res_proj"
    frozen = _generator(tmp_path / "a", lora=4, lora_targets=targets)
    learns = _generator(tmp_path / "b", lora=4, lora_targets=targets, pyramid_heads="default")
    for model in (frozen, learns):
        for seed in range(3):
            _train_a_step(model, seed)
    assert torch.all(frozen.adapter.heads[0].out.weight == 0)
    assert torch.all(frozen.injection.layers[0].modulation.weight == 0)
    assert torch.all(frozen.injection.layers[0].res_proj.lora_B["default"].weight == 0)
    assert torch.any(frozen.injection.layers[0].modulation.bias != 0)  # what does train
    assert torch.any(learns.injection.layers[0].modulation.weight != 0)
    assert torch.any(learns.injection.layers[0].res_proj.lora_B["default"].weight != 0)


def test_only_the_res_proj_lora_trains_and_the_caption_projection_takes_lora(tmp_path):
    targets = "to_q,to_k,to_v,to_out.0,caption_projection.linear_1,caption_projection.linear_2,res_proj"
    model = _generator(tmp_path, lora=4, lora_targets=targets)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "injection.layers.0.res_proj.base_layer.weight" not in trained
    assert "injection.layers.0.res_proj.lora_A.default.weight" in trained
    assert "injection.layers.0.modulation.weight" in trained and "injection.gate.first.weight" in trained
    assert any(n.startswith("base.caption_projection.linear_2.lora_B") for n in trained)
    assert any(n.startswith("adapter.heads.") for n in trained)


def test_guidance_drops_the_adapter_but_keeps_the_lr_latent(tmp_path):
    model = _generator(tmp_path, pyramid_heads="default")
    with torch.no_grad():
        for layer in model.injection.layers:
            torch.nn.init.normal_(layer.modulation.weight, std=0.1)
        model.base.pos_embed.proj.weight[:, 4:].normal_()  # the concatenated LR's weights
    noisy, lr, t = _inputs()
    with torch.no_grad():
        cond = model.eval()(noisy, lr, t)
        no_adapter = model(noisy, lr, t, use_adapter=False)
        no_lr = model(noisy, torch.zeros_like(lr), t, use_adapter=False)
    assert not torch.allclose(cond, no_adapter) and not torch.allclose(no_adapter, no_lr)
    assert model.injection.state is None  # the hooks are inactive for the unconditional branch


def test_dropping_the_style_changes_only_the_dropped_samples(tmp_path):
    model = _generator(tmp_path)
    with torch.no_grad():
        torch.nn.init.normal_(model.injection.style.second.weight, std=0.1)
    noisy, lr, t = _inputs()
    with torch.no_grad():
        kept = model.eval()(noisy, lr, t)
        dropped = model(noisy, lr, t, style_keep=torch.tensor([1.0, 0.0]))
    assert torch.equal(dropped[0], kept[0]) and not torch.allclose(dropped[1], kept[1])


def test_the_pyramid_needs_the_adapter_and_a_width_of_32_channel_groups(tmp_path):
    with pytest.raises(ValueError, match="cond=adapter"):
        schemas.PixartModel(path="x", adapter="pyramid")
    with pytest.raises(ValueError, match="multiple of 32"):
        schemas.PixartModel(path="x", cond="adapter", adapter="pyramid", pyramid_width=48)


def test_new_settings_at_their_default_keep_the_dump_and_so_the_hash():
    plain = schemas.PixartModel(path="x", cond="adapter").model_dump(mode="json")
    assert "adapter" not in plain and "pyramid_heads" not in plain
    assert schemas.PixartModel(path="x", cond="adapter", adapter="pyramid").model_dump()["adapter"] == "pyramid"
    assert "dropout_drops" not in schemas.Diffusion().model_dump()
    assert "guidance_drops" not in schemas.Eval().model_dump()
    assert schemas.Eval.model_validate(schemas.Eval(guidance_drops="adapter").model_dump()).guidance_drops == "adapter"


def test_a_run_with_the_scripts_semantics_trains_the_pyramid_and_rebuilds_it(tmp_path):
    """A whole run on an original-layout .pth (4 steps, EMA, checkpoints, eval with guidance 3): the pyramid,
    the injection and the res_proj LoRA train; the final generator reloads on the same base; export --merge
    refuses plainly."""
    from ditsr_plan.compiler import compile_plan
    from ditsr_plan.runtime.run import run_plan
    from ditsr_plan.runtime.run.export import export_merged, rebuild_generator
    from ditsr_plan.runtime.run.folder import RunError
    from ditsr_plan.testing import pretrained_plan, save_original_pixart

    folder = make_pixart(tmp_path / "diffusers")
    pth = save_original_pixart(folder, tmp_path / "PixArt-tiny.pth", caption_tokens=1)
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())  # the heads of a tiny width
    line = (
        f"model pixart path={pth} lora=4 lora_targets=to_q,to_k,to_v,to_out.0,res_proj {PYRAMID} pyramid_heads=default"
    )
    extra = "diffusion dropout_drops=style\neval every=4 steps=2 size=32 cfg=3 guidance_drops=adapter lpips=off\n"
    graph = compile_plan(pretrained_plan(tmp_path, line, extra=extra))
    run_plan(graph, tmp_path / "run", quiet=True)
    trained, _ = rebuild_generator(tmp_path / "run", ema=False)
    assert torch.any(trained.injection.layers[0].res_proj.lora_B["default"].weight != 0)
    assert torch.any(trained.injection.layers[0].modulation.weight != 0)
    noisy, lr, t = _inputs()
    with torch.no_grad():
        ours = trained.eval()(noisy, lr, t)
    assert trained.caption.shape == (1, 1, 8)  # the checkpoint's learned null caption
    assert not torch.allclose(ours, _base(folder, noisy, t), atol=1e-4)
    with pytest.raises(RunError, match="adapter=pyramid"):
        export_merged(tmp_path / "run", tmp_path / "merged")


def _gradients(tmp_path: Path, checkpointing: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    targets = "to_q,to_k,to_v,to_out.0,res_proj"
    model = _generator(tmp_path, 3, lora=4, lora_targets=targets, pyramid_heads="default", checkpointing=checkpointing)
    with torch.no_grad():
        for layer in model.injection.layers:
            torch.nn.init.normal_(layer.modulation.weight, std=0.1)
    noisy, lr, t = _inputs()
    model.train()(noisy, lr, t, style_keep=torch.tensor([1.0, 0.0])).square().mean().backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_recomputes_the_same_injection(tmp_path):
    """The hooks read the call's state, so the blocks' recomputation in backward gives the same gradients."""
    plain, checkpointed = _gradients(tmp_path / "a", False), _gradients(tmp_path / "b", True)
    assert plain.keys() == checkpointed.keys() and "adapter.heads.0.out.weight" in plain
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-7) for k in plain)


def test_lora_on_the_injection_alone_is_named(tmp_path):
    from ditsr_plan.runtime.train.loading import LoadError

    with pytest.raises(LoadError, match="at least one linear layer of the transformer"):
        _generator(tmp_path, lora=4, lora_targets="res_proj")
