"""model dit init=zero: the DiT paper's adaLN-Zero start for a DiT trained from scratch (the demo's)."""

import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.train.generators.dit import SRDiT
from ditsr_plan.settings.schemas import DitModel
from ditsr_plan.testing import tiny_plan

torch.set_num_threads(2)


def model(init: str) -> SRDiT:
    torch.manual_seed(0)
    return SRDiT(48, 8, DitModel(preset="tiny", depth=2, heads=2, head_dim=32, patch=1, init=init))


def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 48, 8, 8, generator=g), torch.randn(2, 48, 8, 8, generator=g), torch.tensor([999, 10])


def test_zero_init_predicts_zero_then_learns_and_the_default_is_diffusers():
    x, cond, t = inputs()
    zero = model("zero")
    assert torch.equal(zero(x, cond, t), torch.zeros_like(x))  # residual target: the first SR is the LR
    assert model("default")(x, cond, t).abs().mean() > 0.01  # diffusers' random output layer, as before
    optimizer = torch.optim.AdamW(zero.parameters(), lr=1e-3)
    target = torch.randn_like(x)
    losses = []
    for _ in range(3):
        loss = (zero(x, cond, t) - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] and zero(x, cond, t).abs().sum() > 0


def test_init_at_its_default_leaves_the_plan_hash(tmp_path):
    extra = {"a": "", "b": "init=default", "c": "init=zero"}
    graphs = {}
    for name, key in extra.items():
        plan = tiny_plan(tmp_path / name)
        plan.write_text(plan.read_text().replace("model  dit preset=tiny", f"model  dit preset=tiny {key}"))
        graphs[name] = compile_plan(plan)
    assert graphs["a"].hash == graphs["b"].hash != graphs["c"].hash
    assert graphs["c"].block("model").init == "zero" and graphs["a"].block("model").init == "default"
