"""Pretrained generators (PixArt, DiT) with LR conditioning and LoRA, and one's own: every path on tiny
randomly initialised models written with save_pretrained (nothing downloaded)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.diagnostics import PlanError
from ditsr_plan.runtime.errors import RunFailure
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.runtime.run.signals import RunInterrupted
from ditsr_plan.testing import make_dit, make_pixart, make_vae, pretrained_plan, trainer_for

torch.set_num_threads(2)
EXE = str(Path(sys.executable).with_name("ditsr-plan"))


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g), torch.tensor([30, 700])


def _base_output(kind: str, folder: Path, noisy, t):
    from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel

    if kind == "pixart":
        base = PixArtTransformer2DModel.from_pretrained(folder).eval()
        added = {"resolution": None, "aspect_ratio": None}
        return base(noisy, encoder_hidden_states=torch.zeros(2, 1, 8), timestep=t, added_cond_kwargs=added).sample
    base = DiTTransformer2DModel.from_pretrained(folder).eval()
    return base(noisy, timestep=t, class_labels=torch.full((2,), 10)).sample  # the null class


@pytest.mark.parametrize("kind", ["pixart", "dit"])
@pytest.mark.parametrize("cond", ["concat", "adapter", "concat+adapter"])
def test_at_step_0_the_generator_is_the_base_model(tmp_path, kind, cond):
    """Zero-initialised LR weights, adapter projections, augmentation embedding and LoRA B: the base's output
    (its first half: the 512 px checkpoints predict the variance too) whatever the LR latent and level."""
    folder = make_pixart(tmp_path) if kind == "pixart" else make_dit(tmp_path)
    trainer = trainer_for(pretrained_plan(tmp_path, f"model {kind} path={folder} lora=4 cond={cond}"))
    noisy, lr, t = _inputs()
    with torch.no_grad():
        ours = trainer.model.eval()(noisy, lr, t, torch.tensor([0.0, 0.1]))
        expected = _base_output(kind, folder, noisy, t)[:, :4]
    assert ours.shape == (2, 4, 16, 16)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_only_the_trained_tensors_are_optimised_and_the_base_never_changes(tmp_path):
    folder = make_pixart(tmp_path)
    trainer = trainer_for(pretrained_plan(tmp_path, f"model pixart path={folder} lora=4 cond=concat+adapter"))
    model = trainer.model
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(
        "lora_" in n or n.startswith(("adapter.", "aug_level.", "base.pos_embed.proj.")) for n in trained
    )
    assert any("lora_A" in n for n in trained) and any(n.startswith("adapter.") for n in trained)
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert len(optimised) == len(trained)
    assert sum(p.numel() for p in optimised) == sum(p.numel() for n, p in model.named_parameters() if n in trained)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n not in trained}
    for step in (0, 2, 3):
        trainer.train_step(step, [trainer.data.batch(step)])
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in model.named_parameters() if "lora_B" in n)


def test_the_conditioning_trains_at_cond_lr_times_the_lr_knob(tmp_path):
    """The reference's two rates: LoRA at 1e-5, the adapter and LR input layer at 1e-4 (lr=1e-5 cond_lr=10),
    the lr knob's schedule applied to both."""
    folder = make_pixart(tmp_path)
    line = f"model pixart path={folder} lora=4 cond=concat+adapter cond_lr=10"
    trainer = trainer_for(pretrained_plan(tmp_path, line, extra="optim lr=1e-5\n"))
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    base, cond = trainer.optimizer.param_groups
    assert all("lora_" in names[id(p)] for p in base["params"])
    assert {names[id(p)].split(".")[0] for p in cond["params"]} == {"adapter", "aug_level", "base"}
    trainer.train_step(0, [trainer.data.batch(0)])
    assert base["lr"] == pytest.approx(1e-5) and cond["lr"] == pytest.approx(1e-4)
    plain = trainer_for(pretrained_plan(tmp_path / "plain", f"model pixart path={folder} lora=4"))
    assert [g["lr_scale"] for g in plain.optimizer.param_groups] == [1.0, 1.0]


def test_checkpoints_hold_the_trained_tensors_and_resume_bitwise_on_the_same_base_only(tmp_path, monkeypatch):
    folder = make_pixart(tmp_path)
    plan = pretrained_plan(tmp_path, f"model pixart path={folder} lora=4 cond=concat", steps=6, ckpt=3)
    graph = compile_plan(plan)
    straight = tmp_path / "straight"
    run_plan(graph, straight)
    from safetensors.torch import load_file

    ckpt = straight / "checkpoints" / "step-00000006"
    saved = load_file(ckpt / "generator.safetensors")
    trainer = trainer_for(plan)
    assert set(saved) == {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    state = json.loads((ckpt / "state.json").read_text())
    assert state["trainer"]["base"]["digest"] == trainer.model.fingerprint["digest"]

    from ditsr_plan.runtime.train import trainer as trainer_module

    real_step = trainer_module.Trainer.train_step

    def crash_at_4(self, step, batches, **kwargs):
        if step == 4:
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, step, batches, **kwargs)

    broken = tmp_path / "broken"
    monkeypatch.setattr(trainer_module.Trainer, "train_step", crash_at_4)
    with pytest.raises(RunInterrupted, match="stopped at once"):  # a Ctrl-C outside the handler's reach
        run_plan(graph, broken)
    monkeypatch.setattr(trainer_module.Trainer, "train_step", real_step)
    # another base (same shape, other weights) is refused, naming both fingerprints
    other = make_pixart(tmp_path / "other", seed=1)
    other_plan = pretrained_plan(tmp_path / "op", f"model pixart path={other} lora=4 cond=concat", steps=6, ckpt=3)
    other_graph = compile_plan(other_plan)
    with pytest.raises(RunFailure, match=r"was made on base [0-9a-f]{16} .*but the model now loads base [0-9a-f]{16}"):
        run_plan(other_graph, broken, resume=True, force=True)
    run_plan(graph, broken, resume=True)
    again = load_file(broken / "checkpoints" / "step-00000006" / "generator.safetensors")
    assert all(torch.equal(saved[k], again[k]) for k in saved)


def test_a_run_writes_the_lora_in_peft_format_and_export_merges_it(tmp_path):
    """The acceptance run: model pixart path=<tiny> lora=4 cond=concat, latent vae path=<tiny>; then
    'ditsr-plan export RUN --merge OUT' writes a folder from_pretrained loads, reproducing the EMA generator."""
    from diffusers import PixArtTransformer2DModel

    from ditsr_plan.runtime.run.export import rebuild_generator

    folder = make_pixart(tmp_path)
    plan = pretrained_plan(tmp_path, f"model pixart path={folder} lora=4 cond=concat")
    run = tmp_path / "run"
    done = subprocess.run([EXE, "run", str(plan), "--out", str(run)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generator pixart: " in done.stderr and "LoRA rank 4 on to_q,to_k,to_v,to_out.0" in done.stderr
    for name in ("adapter_config.json", "adapter_model.safetensors", "sr_conditioning.safetensors"):
        assert (run / "final" / "generator" / name).is_file(), name
    out = tmp_path / "merged"
    done = subprocess.run([EXE, "export", str(run), "--merge", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = PixArtTransformer2DModel.from_pretrained(out / "transformer").eval()
    assert merged.config.in_channels == 8 and not any("lora" in n for n, _ in merged.named_parameters())
    trained, _ = rebuild_generator(run)
    noisy, lr, t = _inputs(1)
    with torch.no_grad():
        expected = trained.eval()(noisy, lr, t, torch.zeros(2))
        added = {"resolution": None, "aspect_ratio": None}
        ours = merged(torch.cat([noisy, lr], 1), encoder_hidden_states=torch.zeros(2, 1, 8), timestep=t,
                      added_cond_kwargs=added).sample[:, :4]  # fmt: skip
    assert not torch.allclose(expected, _base_output("pixart", folder, noisy, t)[:, :4], atol=1e-4)  # it trained
    assert torch.allclose(ours, expected, atol=1e-5)
    # the exported folder is a pipeline: Python and the command line give the same image for the same seed
    import numpy as np
    from PIL import Image

    from ditsr_plan.pipeline import DiTSRPipeline

    image = Image.fromarray((np.random.RandomState(0).rand(11, 13, 3) * 255).astype("uint8"))
    image.save(tmp_path / "in.png")
    [sr] = DiTSRPipeline.from_pretrained(out)(image, num_inference_steps=2, generator=torch.Generator().manual_seed(2))
    argv = [EXE, "upscale", str(out), str(tmp_path / "in.png"), "-o", str(tmp_path / "up"), "--steps", "2"]
    done = subprocess.run([*argv, "--seed", "2", "-q"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with Image.open(tmp_path / "up" / "in.png") as cli:
        assert cli.size == (52, 44) and np.array_equal(np.asarray(cli), np.asarray(sr))


def test_a_model_and_latent_that_do_not_fit_are_named(tmp_path):
    folder = make_pixart(tmp_path)
    plan = pretrained_plan(tmp_path, f"model pixart path={folder}")
    plan.write_text(plan.read_text().replace(f"latent vae path={tmp_path / 'vae'}", "latent pixel_unshuffle factor=4"))
    with pytest.raises(RunFailure, match="takes 4 latent channels, but the plan's latent has 48"):
        trainer_for(plan)


def test_lora_targets_that_match_nothing_list_the_layers_there_are(tmp_path):
    folder = make_pixart(tmp_path)
    plan = pretrained_plan(tmp_path, f"model pixart path={folder} lora=4 lora_targets=to_q,qkv")
    with pytest.raises(RunFailure, match=r"lora_targets: qkv match no linear layer.*attn1\.to_q"):
        trainer_for(plan)


def test_train_lora_with_concat_is_a_plan_error(tmp_path):
    folder = make_pixart(tmp_path)
    plan = pretrained_plan(tmp_path, f"model pixart path={folder} lora=4 train=lora cond=concat")
    with pytest.raises(PlanError, match="the model never sees the LR"):
        compile_plan(plan)


def test_a_generator_of_ones_own(tmp_path):
    vae = make_vae(tmp_path)
    factory = "model custom factory=tests.runtime.train.custom_factory:small_net width=8"
    plan = pretrained_plan(tmp_path, factory)
    assert compile_plan(plan).blocks["model"].values["width"] == "8"  # passed on to the factory
    trainer = trainer_for(plan)
    assert trainer.model.inner.net[0].out_channels == 8
    record = trainer.train_step(2, [trainer.data.batch(2)])
    assert set(record.raw) >= {"v", "lpips", "gan"}
    run_plan(compile_plan(plan), tmp_path / "run")
    assert (tmp_path / "run" / "final" / "generator" / "model.safetensors").is_file()
    assert vae.is_dir()


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("raising", r"(?s)raised:\nTraceback.*custom_factory.py.*RuntimeError: the factory's own mistake"),
        ("not_a_module", "returned str, not a torch nn.Module"),
        ("wrong_shape", r"must return the velocity shaped like its input \(1, 4, 8, 8\), it returned \(1, 1, 8, 8\)"),
    ],
)
def test_a_factory_that_fails_gets_a_clear_error(tmp_path, factory, message):
    plan = pretrained_plan(tmp_path, f"model custom factory=tests.runtime.train.custom_factory:{factory}")
    with pytest.raises(RunFailure, match=message) as exc:
        trainer_for(plan)
    assert str(exc.value).count("Traceback") <= 1 and "generators/custom.py" not in str(exc.value)


def test_the_reference_plan_runs_on_tiny_stand_ins(tmp_path):
    """README's offline smoke test as written: plans/reference/pixart_v10.plan on the stand-ins 'tiny-models'
    writes (tiny PixArt, VAE, a folder of photos), at 1/1000 of its steps: the user's real experiment."""
    from ditsr_plan.cli.setup import smoke_command

    assert subprocess.run([EXE, "tiny-models", str(tmp_path / "tiny")], capture_output=True).returncode == 0
    command = shlex.split(smoke_command(tmp_path / "tiny", command="run"))
    done = subprocess.run(
        [EXE, *command[1:], "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generator pixart" in done.stderr and "train=lora+rest, cond=concat+adapter" in done.stderr
    assert "trains: " in done.stderr and "base MLP" in done.stderr  # the scripts' set, per group
    assert "(a pipeline's folder: its transformer/)" in done.stderr  # path= named the pipeline's folder
    assert "by the rule 'watch defocus.fhr > 1.3 for 2 evals after 9: stop' at " in done.stderr
    assert (tmp_path / "run" / "final" / "generator_ema" / "adapter_model.safetensors").is_file()
