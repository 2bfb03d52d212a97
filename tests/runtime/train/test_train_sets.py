"""What trains (``model ... train=lora+rest``, ``train_add=``, ``train_remove=``) and at which learning rate
(``cond_lr_on=``), on a tiny random PixArt: the optimiser, the EMA shadow, the checkpoint and the export hold
exactly the trained parameters (reference-setup.md, "The model as the scripts built it": ``apply_lora``
freezes only the base weight and bias of each linear it wraps; 1e-4 for the adapter and the input layer,
1e-5 for every other trained parameter)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ditsr_plan.runtime.errors import RunFailure
from ditsr_plan.testing import make_pixart, pretrained_plan, trainer_for

torch.set_num_threads(1)

SCRIPTS = (
    "model pixart path={folder} lora=4 cond=concat+adapter train=lora+rest cond_lr=10 "
    "cond_lr_on=adapter.*,pos_embed.proj.* lora_targets=to_q,to_k,to_v,to_out.0,caption_projection.linear_1,"
    "caption_projection.linear_2"
)


def _trainer(tmp_path: Path, line: str, extra: str = ""):
    folder = make_pixart(tmp_path)
    return trainer_for(pretrained_plan(tmp_path, line.format(folder=folder), extra=extra))


def _trained(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_lora_rest_trains_everything_but_the_wrapped_base_weights(tmp_path):
    trainer = _trainer(tmp_path, SCRIPTS, extra="optim lr=1e-5\n")
    model = trainer.model
    names = {n for n, _ in model.named_parameters()}
    trained = _trained(model)
    frozen = names - trained
    # frozen: exactly the base weight and bias of every LoRA-wrapped linear (attention, caption projection)
    assert frozen and all(".base_layer." in n for n in frozen)
    assert any(".attn1.to_q.base_layer.weight" in n for n in frozen)
    assert any("caption_projection.linear_1.base_layer.weight" in n for n in frozen)
    # trained: the LoRA, every block MLP, the adaLN tables, the embedders, the input layer, the adapter
    for part in ("lora_A", ".ff.net.", "scale_shift_table", "adaln_single.", "pos_embed.proj.", "adapter."):
        assert any(part in n for n in trained), part
    # the optimiser holds exactly the trained parameters; the adapter and the input layer at 10 x lr (the
    # trainer sets each group's lr to the lr knob x its lr_scale at every step)
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in model.parameters() if p.requires_grad}
    by_id = {id(p): n for n, p in model.named_parameters()}
    lrs = {by_id[id(p)]: 1e-5 * g["lr_scale"] for g in trainer.optimizer.param_groups for p in g["params"]}
    fast = {n for n, lr in lrs.items() if lr == pytest.approx(1e-4)}
    assert fast == {n for n in trained if n.startswith(("adapter.", "base.pos_embed.proj."))}
    assert all(lr == pytest.approx(1e-5) for n, lr in lrs.items() if n not in fast)
    # EMA shadow and checkpoint tensors: the trained set, nothing more
    assert trainer.ema is not None and set(trainer.ema.state_dict()) == trained
    assert set(trainer.trained_tensors()["generator"]) == trained


def test_the_export_holds_what_trains(tmp_path):
    from safetensors.torch import load_file

    from ditsr_plan.runtime.run.export import _load_final

    trainer = _trainer(tmp_path, SCRIPTS)
    model = trainer.model
    with torch.no_grad():  # as if trained: every trained tensor moved
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    model.save_final(tmp_path / "final")
    rest = set(load_file(str(tmp_path / "final" / "sr_conditioning.safetensors")))
    lora = load_file(str(tmp_path / "final" / "adapter_model.safetensors"))
    trained = _trained(model)
    assert rest == {n for n in trained if "lora_" not in n}
    assert len(lora) == sum(1 for n in trained if "lora_" in n)
    # export reads it back into a fresh generator: every trained tensor, and the frozen base untouched
    fresh = trainer_for(pretrained_plan(tmp_path / "again", SCRIPTS.format(folder=tmp_path / "pixart"))).model
    _load_final(fresh, tmp_path / "final")
    mine, theirs = model.state_dict(), fresh.state_dict()
    assert all(torch.equal(mine[n], theirs[n]) for n in mine)


def test_train_add_and_remove_patterns(tmp_path):
    line = (
        "model pixart path={folder} lora=4 cond=concat train=lora+cond "
        "train_add=transformer_blocks.*.ff.* train_remove=aug_level.*"
    )
    model = _trainer(tmp_path, line).model
    trained = _trained(model)
    assert any(".ff.net." in n for n in trained)
    assert not any(n.startswith("aug_level.") for n in trained)
    assert not any("scale_shift_table" in n for n in trained)  # neither lora+cond nor added


@pytest.mark.parametrize("key", ["train_add", "train_remove", "cond_lr_on"])
def test_a_pattern_that_matches_nothing_is_an_error_at_its_key(tmp_path, key):
    line = f"model pixart path={{folder}} lora=4 cond=concat {key}=adapter.*"  # no adapter with cond=concat
    with pytest.raises(RunFailure) as info:
        _trainer(tmp_path, line)
    message = str(info.value)
    col = line.format(folder=tmp_path / "pixart").index(key) + 1
    assert "pretrained.plan:10:" in message and f":{col}: " in message
    assert f"model {key}: 'adapter.*' matches no parameter" in message


def test_a_cond_lr_pattern_on_frozen_parameters_is_an_error(tmp_path):
    line = "model pixart path={folder} lora=4 cond=concat train=lora+cond cond_lr_on=transformer_blocks.*.ff.*"
    with pytest.raises(RunFailure, match=r"pretrained.plan:10:\d+: model cond_lr_on: .* matches only frozen"):
        _trainer(tmp_path, line)


def test_lora_rest_needs_a_rank(tmp_path):
    from ditsr_plan.diagnostics import PlanError

    with pytest.raises(PlanError, match="lora=RANK"):
        _trainer(tmp_path, "model pixart path={folder} cond=concat train=lora+rest")
