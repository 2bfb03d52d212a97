"""eval spacing=: diffusers' timestep_spacing of the sampler, and a field that leaves existing plans' hashes alone."""

import pytest
import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.validate.evaluator import Evaluator
from ditsr_plan.settings.schemas import Eval, plain_values
from ditsr_plan.testing import tiny_plan, tiny_trainer

torch.set_num_threads(2)
EVAL = Eval(every=2, steps=2, size=64, lq_init=0.0, lpips="off")


@pytest.mark.parametrize(
    ("spacing", "steps", "expected"),
    [("leading", 2, [500, 0]), ("trailing", 1, [999]), ("trailing", 2, [999, 499]), ("leading", 1, [0])],
)
def test_spacing_picks_the_timesteps_the_model_sees(tmp_path, spacing, steps, expected):
    trainer = tiny_trainer(tmp_path)
    ev = Evaluator(trainer, EVAL.model_copy(update={"spacing": spacing, "steps": steps}), tmp_path)
    seen: list[int] = []
    handle = trainer.model.register_forward_pre_hook(lambda module, args: seen.append(int(args[2][0])))
    sr = ev.sample(ev.images[0].lr_up)
    handle.remove()
    assert seen == expected and bool(torch.isfinite(sr).all())


def test_spacing_at_its_default_leaves_the_hash_and_a_set_spacing_changes_it(tmp_path):
    plain = tiny_plan(tmp_path / "a", extra="eval every=6 steps=2 size=64\n")
    leading = tiny_plan(tmp_path / "b", extra="eval every=6 steps=2 size=64 spacing=leading\n")
    trailing = tiny_plan(tmp_path / "c", extra="eval every=6 steps=2 size=64 spacing=trailing\n")
    a, b, c = compile_plan(plain), compile_plan(leading), compile_plan(trailing)
    assert a.hash == b.hash != c.hash
    assert "spacing" not in a.meaning()["blocks"]["eval"]["values"]
    assert c.meaning()["blocks"]["eval"]["values"]["spacing"] == "trailing"
    assert c.block("eval").spacing == "trailing" and a.block("eval").spacing == "leading"
    assert plain_values(Eval(spacing="trailing"))["spacing"] == "trailing" and "spacing" not in plain_values(Eval())


def test_a_graph_with_spacing_reads_back_from_json(tmp_path):
    from ditsr_plan.compiler.graph import ScheduleGraph

    for spacing in ("leading", "trailing"):
        graph = compile_plan(tiny_plan(tmp_path / spacing, extra=f"eval every=6 steps=1 spacing={spacing}\n"))
        again = ScheduleGraph.from_json(graph.to_json())
        assert again.hash == graph.hash and again.block("eval").spacing == spacing


def test_start_noise_zero_starts_from_the_lr_itself_and_leaves_the_hash_at_one(tmp_path):
    trainer = tiny_trainer(tmp_path)
    settings = EVAL.model_copy(update={"spacing": "trailing", "steps": 1, "start_noise": 0.0})
    ev = Evaluator(trainer, settings, tmp_path)
    seen: list[torch.Tensor] = []
    handle = trainer.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    ev.sample(ev.images[0].lr_up)
    Evaluator(trainer, settings.model_copy(update={"start_noise": 1.0}), tmp_path).sample(ev.images[0].lr_up)
    handle.remove()
    assert torch.equal(
        seen[0], torch.zeros_like(seen[0])
    )  # no noise: the zero latent (the LR itself with target=residual)
    assert seen[1].std() > 0.5  # the schedule's noise at t = 999
    plain = compile_plan(tiny_plan(tmp_path / "a", extra="eval every=6 steps=1\n"))
    one = compile_plan(tiny_plan(tmp_path / "b", extra="eval every=6 steps=1 start_noise=1\n"))
    zero = compile_plan(tiny_plan(tmp_path / "c", extra="eval every=6 steps=1 start_noise=0\n"))
    assert plain.hash == one.hash != zero.hash and zero.block("eval").start_noise == 0
