"""The runtime's guarantees: only live terms run, resume is exact, checkpoints survive crashes."""

import json
from pathlib import Path

import pytest
import torch

from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.run import RunError, run_plan
from ditsr_plan.runtime.run.signals import RunInterrupted
from ditsr_plan.settings.schemas import FolderData, PairedData
from ditsr_plan.testing import tiny_plan, tiny_trainer

torch.set_num_threads(2)


def _count_calls(trainer):
    counts = {"decode": 0, "lpips": 0, "disc": 0}
    decode = trainer.latent.decode

    def counting_decode(x):
        counts["decode"] += 1
        return decode(x)

    trainer.latent.decode = counting_decode
    trainer.terms["lpips"].lpips.register_forward_hook(lambda *a: counts.__setitem__("lpips", counts["lpips"] + 1))
    trainer.terms["gan"].disc.register_forward_hook(lambda *a: counts.__setitem__("disc", counts["disc"] + 1))
    return counts


def test_stage_a_computes_no_pixel_branch_and_stage_b_computes_it_every_step(tmp_path):
    trainer = tiny_trainer(tmp_path, steps=20)
    counts = _count_calls(trainer)
    d_opt = trainer.terms["gan"].optimizer
    for step in range(0, 6):  # stage A, before the D warm-up window (GAN live from 10, d_warmup=2)
        trainer.train_step(step, [trainer.data.batch(step)])
    assert counts == {"decode": 0, "lpips": 0, "disc": 0}
    assert not d_opt.state  # D never stepped
    for step in range(10, 14):  # stage B: everything live
        trainer.train_step(step, [trainer.data.batch(step)])
    assert counts["decode"] == 4 and counts["lpips"] == 4
    # per step: D(fake) for the generator loss, D(real) and D(fake) for D, and D(real) again on R1 steps
    assert counts["disc"] == 4 * 3 + 2


def test_discriminator_warms_up_before_the_gan_is_live(tmp_path):
    trainer = tiny_trainer(tmp_path, steps=20)
    graph = trainer.graph
    assert graph.weights_at(8)["gan"] == 0 and graph.needs_at(8).discriminator
    before = {k: v.clone() for k, v in trainer.terms["gan"].disc.state_dict().items()}
    record = trainer.train_step(8, [trainer.data.batch(8)])
    assert "gan" not in record.raw and "gan" in record.after_step
    after = trainer.terms["gan"].disc.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_term_that_does_not_reach_the_generator_stops_the_run(tmp_path):
    from ditsr_plan.runtime.train.checks import TermCheckError

    trainer = tiny_trainer(tmp_path, steps=20)
    trainer.terms["edge"].forward = lambda s: torch.zeros((), requires_grad=True) * 1.0
    with pytest.raises(TermCheckError, match="term 'edge' became live at step 10 but has no gradient path"):
        trainer.train_step(10, [trainer.data.batch(10)])


def _weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = run_dir / "checkpoints" / f"step-{step:08d}"
    return {
        f"{name}/{k}": v
        for name in ("generator", "ema", "term-gan-disc")
        for k, v in load_file(folder / f"{name}.safetensors").items()
    }


def _metric_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("images_per_s")
    return lines


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path, monkeypatch):
    plan = tiny_plan(tmp_path, steps=12, ckpt=6)
    graph = compile_plan(plan)
    straight = tmp_path / "straight"
    run_plan(graph, straight)

    from ditsr_plan.runtime.train import trainer as trainer_module

    real_step = trainer_module.Trainer.train_step

    def crash_at_8(self, step, batches, **kwargs):
        if step == 8:
            raise KeyboardInterrupt("simulated kill")
        return real_step(self, step, batches, **kwargs)

    broken = tmp_path / "broken"
    monkeypatch.setattr(trainer_module.Trainer, "train_step", crash_at_8)
    with pytest.raises(RunInterrupted, match="stopped at once"):  # a Ctrl-C outside the handler's reach
        run_plan(graph, broken)
    monkeypatch.setattr(trainer_module.Trainer, "train_step", real_step)
    assert [p.name for p in (broken / "checkpoints").iterdir()] == ["step-00000006"]
    run_plan(graph, broken, resume=True)

    a, b = _weights(straight, 12), _weights(broken, 12)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metric_lines(straight) == _metric_lines(broken)


def test_resume_refuses_another_plan_unless_forced(tmp_path):
    run_dir = tmp_path / "run"
    run_plan(compile_plan(tiny_plan(tmp_path, steps=4, ckpt=2)), run_dir)
    changed = compile_plan(tiny_plan(tmp_path, steps=6, ckpt=2))
    with pytest.raises(RunError, match="was made from another schedule"):
        run_plan(changed, run_dir, resume=True)
    run_plan(changed, run_dir, resume=True, force=True)
    assert (run_dir / "checkpoints" / "step-00000006").is_dir()


def test_an_existing_run_folder_is_never_overwritten_silently(tmp_path):
    run_dir = tmp_path / "run"
    graph = compile_plan(tiny_plan(tmp_path, steps=2, ckpt=2))
    run_plan(graph, run_dir)
    with pytest.raises(RunError, match="exists and is not empty"):
        run_plan(graph, run_dir)
    run_plan(graph, run_dir, overwrite=True)


def test_disk_full_while_writing_a_checkpoint_stops_cleanly_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    import errno

    from safetensors import torch as st

    from ditsr_plan.cli import main
    from ditsr_plan.runtime.run.checkpoint import newest_complete

    run_dir = tmp_path / "run"
    plan = tiny_plan(tmp_path, steps=6, ckpt=2)
    real_save = st.save_file

    def full_disk(tensors, path, *args, **kwargs):
        if "step-00000004" in str(path) and "optimizer" in str(path):
            with open(path, "wb") as fh:  # a partly written file, then the disk is full
                fh.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(st, "save_file", full_disk)
    assert main(["run", str(plan), "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "could not write checkpoint step-00000004" in err and "No space left on device" in err
    assert "the previous checkpoint step-00000002 is intact" in err and "Traceback" not in err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-00000002"]  # nothing partial
    ckpt = newest_complete(run_dir / "checkpoints")
    assert ckpt is not None and ckpt.step == 2
    monkeypatch.setattr(st, "save_file", real_save)
    run_plan(compile_plan(plan), run_dir, resume=True)
    assert newest_complete(run_dir / "checkpoints").step == 6


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    plan = tiny_plan(tmp, steps=4, ckpt=2)
    run_plan(compile_plan(plan), tmp / "run")
    return plan, tmp / "run"


def _rehash(ckpt: Path, name: str) -> None:
    """Make the manifest agree with a damaged file: corruption that happened before the hash was taken."""
    import hashlib

    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((ckpt / name).read_bytes()).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


CORRUPTIONS = {
    "truncated": (
        lambda c: (c / "generator.safetensors").write_bytes((c / "generator.safetensors").read_bytes()[:100]),
        "generator.safetensors does not match its SHA-256",
    ),
    "bad header": (
        lambda c: (
            (c / "ema.safetensors").write_bytes(b"\xff" * 8 + (c / "ema.safetensors").read_bytes()[8:]),
            _rehash(c, "ema.safetensors"),
        ),
        "ema.safetensors is not a readable safetensors file",
    ),
    "missing file": (
        lambda c: (c / "generator-optimizer.safetensors").unlink(),
        "generator-optimizer.safetensors is missing",
    ),
    "wrong hash": (
        lambda c: (c / "manifest.json").write_text(
            (c / "manifest.json").read_text().replace('"state.json": "', '"state.json": "0')
        ),
        "state.json does not match its SHA-256",
    ),
    "no manifest": (lambda c: (c / "manifest.json").unlink(), "no manifest.json"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupted_checkpoint_is_reported_and_the_previous_one_used(finished_run, tmp_path, kind, capsys):
    import shutil

    from ditsr_plan.runtime.run.checkpoint import newest_complete

    plan, finished = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    damage, expected = CORRUPTIONS[kind]
    damage(run_dir / "checkpoints" / "step-00000004")
    messages = []
    assert newest_complete(run_dir / "checkpoints", report=messages.append).step == 2
    assert expected in messages[0], messages
    if kind == "bad header":  # and a resume reports it, and continues from step 2 to the end
        result = run_plan(compile_plan(plan), run_dir, resume=True)
        assert result.steps_done == 2
        assert expected in capsys.readouterr().err


def test_metrics_lines_hold_every_term_and_never_break_on_idle_terms(tmp_path):
    run_dir = tmp_path / "run"
    plan = tiny_plan(tmp_path, steps=4, ckpt=4, log="every=1 shadow=false tensorboard=on")
    run_plan(compile_plan(plan), run_dir)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2, 3]
    first, last = lines[0], lines[-1]
    assert set(first["terms"]) == {"v", "latent_l1", "lpips", "edge", "flat", "ffl", "gan"}
    assert first["stage"] == "A" and first["terms"]["lpips"] == {
        "weight": 0.0,
        "raw": None,
        "weighted": None,
        "live": False,
    }
    v = first["terms"]["v"]
    assert v["weighted"] == pytest.approx(v["weight"] * v["raw"])
    assert last["stage"] == "B" and last["terms"]["gan"]["raw"] is not None
    assert last["discriminator"]["gan"]["loss"] > 0 and last["lr"]["lr_d"] == pytest.approx(1e-4)
    assert first["loss"] == pytest.approx(sum(t["weighted"] for t in first["terms"].values() if t["live"]))
    assert last["grad_norm"] > 0 and last["images_per_s"] > 0
    grads = last["gradients"]  # on by default for CPU runs
    assert set(grads["norm"]) == {"v", "latent_l1", "lpips", "edge", "flat", "ffl", "gan"}
    assert len(grads["cosine"]) == 7 * 6 // 2 and all(-1 <= c <= 1 for c in grads["cosine"].values())
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_shadow_logging_computes_idle_terms_without_gradient(tmp_path):
    run_dir = tmp_path / "run"
    plan = tiny_plan(tmp_path, steps=2, ckpt=2, log="every=1 shadow=true tensorboard=off")
    run_plan(compile_plan(plan), run_dir)
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["terms"]["lpips"]["raw"] is not None and first["terms"]["lpips"]["live"] is False
    assert first["terms"]["lpips"]["weighted"] == 0.0


def test_final_generator_loads_with_diffusers_alone(tmp_path):
    from diffusers import DiTTransformer2DModel

    run_dir = tmp_path / "run"
    run_plan(compile_plan(tiny_plan(tmp_path, steps=2, ckpt=2)), run_dir)
    model = DiTTransformer2DModel.from_pretrained(run_dir / "final" / "generator_ema")
    assert model.config.in_channels == 2 * model.config.out_channels == 96


def test_vae_latent_runs_on_a_tiny_random_autoencoder(tmp_path):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
    )
    vae.save_pretrained(tmp_path / "vae")
    plan = tiny_plan(tmp_path, steps=4, ckpt=4)
    plan.write_text(plan.read_text().replace("latent pixel_unshuffle factor=4", f"latent vae path={tmp_path / 'vae'}"))
    run_dir = tmp_path / "run"
    result = run_plan(compile_plan(plan), run_dir)
    assert result.steps_done == 4
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["terms"]["lpips"]["raw"] is not None  # the pixel branch decoded through the VAE


def test_lpips_pretrained_offline_stops_before_step_0_naming_the_cache(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.models._api as tv_api

    from ditsr_plan.runtime.train.terms import TermSetupError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    from ditsr_plan.testing import ALL_TERMS

    with pytest.raises(TermSetupError) as exc:
        tiny_trainer(tmp_path, terms=ALL_TERMS.replace("backbone=random", "backbone=pretrained"))
    message = str(exc.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message and "backbone=random" in message


def test_data_folder_errors_are_clear(tmp_path):
    import numpy as np
    from PIL import Image

    from ditsr_plan.runtime.train.data import DataError, TrainingData, load_image

    settings = {"crop": 32, "scale": 4, "batch": 2, "degrade": "bicubic", "workers": 0, "strict": False}
    with pytest.raises(DataError, match="no such folder"):
        TrainingData(FolderData(**{**settings, "root": str(tmp_path / "missing")}), 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        TrainingData(FolderData(**{**settings, "root": str(tmp_path / "empty")}), 0)
    good = tmp_path / "imgs"
    good.mkdir()
    Image.new("RGB", (48, 40), (200, 10, 10)).save(good / "a.png")
    Image.new("L", (40, 40), 128).save(good / "gray.png")
    Image.new("RGBA", (40, 40), (0, 0, 255, 10)).save(good / "alpha.png")
    Image.fromarray(np.full((36, 36), 65535, dtype=np.uint16)).save(good / "deep16.png")
    Image.new("RGB", (20, 12), (0, 90, 0)).save(good / "small.png")  # smaller than the crop: upscaled
    (good / "broken.png").write_bytes(b"\x89PNG not really")
    (good / "empty.png").write_bytes(b"")
    full = (good / "a.png").read_bytes()
    (good / "truncated.png").write_bytes(full[: len(full) // 2])
    data = TrainingData(FolderData(**{**settings, "root": str(good)}), 0)
    for step in range(24):
        batch = data.batch(step)
        assert batch.hr.shape == (2, 3, 32, 32) and batch.lr_up.shape == (2, 3, 32, 32)
        assert batch.hr.min() >= -1 and batch.hr.max() <= 1
    bad = {str(good / n) for n in ("broken.png", "empty.png", "truncated.png")}
    assert set(data.stats.skipped) == bad
    assert load_image(good / "deep16.png").min() == 1.0  # 16-bit white is white, not clipped noise
    assert load_image(good / "alpha.png").shape == (3, 40, 40)
    assert load_image(good / "gray.png").shape == (3, 40, 40)
    strict = TrainingData(FolderData(**{**settings, "root": str(good), "strict": True}), 0)
    with pytest.raises(DataError, match=r"cannot read image .*(broken|empty|truncated).png"):
        for step in range(8):
            strict.batch(step)


def test_batches_are_a_function_of_seed_and_step(tmp_path):
    trainer = tiny_trainer(tmp_path)
    a, b = trainer.data.batch(5), trainer.data.batch(5)
    assert torch.equal(a.hr, b.hr) and torch.equal(a.lr_up, b.lr_up)
    assert not torch.equal(a.hr, trainer.data.batch(6).hr)


def test_paired_data_crops_hr_and_lr_at_the_same_place(tmp_path):
    import numpy as np
    from PIL import Image

    from ditsr_plan.runtime.train.data import TrainingData, upsample

    (tmp_path / "hr").mkdir()
    (tmp_path / "lr").mkdir()
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = 127 + 100 * np.sin(xx / 6.0) * np.cos(yy / 9.0) + xx  # varies across x: a wrong flip shows
    hr = np.repeat(smooth[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)
    Image.fromarray(hr).save(tmp_path / "hr" / "x.png")
    Image.fromarray(hr[::4, ::4]).save(tmp_path / "lr" / "x.png")  # LR = every 4th HR pixel
    settings = {
        "hr": str(tmp_path / "hr"),
        "lr": str(tmp_path / "lr"),
        "crop": 32,
        "scale": 4,
        "batch": 1,
        "workers": 0,
        "strict": False,
    }
    data = TrainingData(PairedData(**settings), 0)
    for step in range(4):
        b = data.batch(step)
        # LR = HR[::4, ::4]: the LR crop at the same place is the HR crop's every 4th pixel (taken before
        # the flip when the pair was flipped)
        straight = b.hr[..., ::4, ::4]
        flipped = b.hr.flip(-1)[..., ::4, ::4].flip(-1)
        assert any(torch.allclose(b.lr_up, upsample(lr, (32, 32)), atol=1e-5) for lr in (straight, flipped))
        assert b.hr.shape == b.lr_up.shape == (1, 3, 32, 32)


def test_accumulation_and_data_workers_give_the_same_run(tmp_path):
    one = tmp_path / "one"
    plan = tiny_plan(tmp_path, steps=3, ckpt=3)
    # one thread in both (threads=auto follows the machine's load, and float sums follow the thread count)
    run_plan(compile_plan(plan, overrides=["optim.accum=2", "run.threads=1"]), one)
    two = tmp_path / "two"
    run_plan(compile_plan(plan, overrides=["optim.accum=2", "data.workers=2", "run.threads=1"]), two)
    a, b = _weights(one, 3), _weights(two, 3)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_another_version_is_refused_with_a_clear_message(tmp_path):
    from ditsr_plan.runtime.run.checkpoint import CheckpointError

    run_dir = tmp_path / "run"
    graph = compile_plan(tiny_plan(tmp_path, steps=2, ckpt=2))
    run_plan(graph, run_dir)
    manifest = run_dir / "checkpoints" / "step-00000002" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format": 99}))
    with pytest.raises(CheckpointError, match="written by another version of ditsr-plan"):
        run_plan(graph, run_dir, resume=True)


def test_a_report_of_another_version_is_a_clear_error(tmp_path, capsys):
    from ditsr_plan.cli import main

    run_dir = tmp_path / "run"
    run_plan(compile_plan(tiny_plan(tmp_path, steps=2, ckpt=2)), run_dir)
    plan = json.loads((run_dir / "plan.json").read_text())
    (run_dir / "plan.json").write_text(json.dumps({**plan, "format": 99}))
    assert main(["report", str(run_dir)]) == 2
    assert "schedule graph format 99; this version reads 1" in capsys.readouterr().err
