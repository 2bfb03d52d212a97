"""Issue #19, checkpoints and run folders fed to evaluate, export, compare and --resume as a careless or
hostile user would: each test feeds the original input, and each case ends in a plain message (exit 2) or
the described behaviour -- never an internal error, never a file lost or a wrong model shipped."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ditsr_plan.cli import main
from ditsr_plan.compiler import compile_plan
from ditsr_plan.runtime.run import run_plan
from ditsr_plan.runtime.run.checkpoint import CheckpointError, save_checkpoint
from ditsr_plan.runtime.run.evaluate import sr_file_names
from ditsr_plan.testing import finished_run_and_pack, make_pixart, pretrained_plan, strict_loads

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (checkpoints at 2 and 4, EMA) and a 2-image pack."""
    root = tmp_path_factory.mktemp("finished")
    finished_run_and_pack(root, "run")
    return root


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    return Path(shutil.copytree(finished / "run", tmp_path / "run"))


def evaluate(run_or_ckpt: Path, pack: Path, *extra: str) -> int:
    return main(["evaluate", str(run_or_ckpt), "--pack", str(pack), "--steps", "1", *extra])


# ---- 2: evaluate --out never replaces what is not its own -------------------------------------------------


def test_evaluate_refuses_a_folder_that_is_not_an_earlier_evaluation_and_touches_nothing(
    finished, run, tmp_path, capsys
):
    data = tmp_path / "data"
    data.mkdir()
    (data / "results.json").write_text('{"mine": 1}')
    (data / "notes.txt").write_text("keep me")
    assert evaluate(run, finished / "pack", "--out", str(data)) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "notes.txt" in err and "internal error" not in err
    assert sorted(p.name for p in data.iterdir()) == ["notes.txt", "results.json"]
    assert (data / "results.json").read_text() == '{"mine": 1}'
    # a folder of someone else's SR images (found in review: it was taken for an evaluation that stopped)
    theirs = tmp_path / "theirs"
    (theirs / "sr").mkdir(parents=True)
    (theirs / "sr" / "mine.png").write_bytes(b"precious")
    assert evaluate(run, finished / "pack", "--out", str(theirs)) == 2
    assert "not an evaluation's folder" in capsys.readouterr().err
    assert (theirs / "sr" / "mine.png").read_bytes() == b"precious"
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "sr").symlink_to(theirs / "sr")
    assert evaluate(run, finished / "pack", "--out", str(linked)) == 2
    assert "internal error" not in capsys.readouterr().err and (theirs / "sr" / "mine.png").exists()
    # an earlier evaluation of the same checkpoint and pack is replaced; of another checkpoint, refused
    out = tmp_path / "ev"
    assert evaluate(run, finished / "pack", "--out", str(out)) == 0
    assert evaluate(run, finished / "pack", "--out", str(out)) == 0
    assert evaluate(run / "checkpoints" / "step-00000002", finished / "pack", "--out", str(out)) == 2
    assert "an evaluation of another checkpoint or pack" in capsys.readouterr().err


def test_two_pack_images_of_one_stem_get_two_sr_files(finished, run, tmp_path):
    pack = Path(shutil.copytree(finished / "pack", tmp_path / "pack"))
    first = sorted((pack / "gt").iterdir())[0].name
    for part in ("gt", "lq"):
        shutil.copy(pack / part / first, pack / part / "a.png")
        (pack / part / first).rename(pack / part / "a.bmp")  # a PNG's bytes under .bmp: PIL reads either
    assert evaluate(run, pack, "--out", str(tmp_path / "ev")) == 0
    sr = sorted(p.name for p in (tmp_path / "ev" / "sr").iterdir())
    assert len(sr) == 3 and "a.png" in sr
    results = strict_loads((tmp_path / "ev" / "results.json").read_text())
    assert results["sr_files"]["a.png"] == "a.png" and results["sr_files"]["a.bmp"] != "a.png"
    assert sr_file_names(["a.bmp", "a.png", "a_bmp.png"]) == {"a.png": "a.png", "a_bmp.png": "a_bmp.png",
                                                               "a.bmp": "a_bmp_2.png"}  # fmt: skip


# ---- 10, 13, 15: a corrupt newest checkpoint, a NaN checkpoint, strict JSON ------------------------------


def test_evaluate_says_which_checkpoint_it_skipped_and_which_it_scored(finished, run, tmp_path, capsys):
    newest = run / "checkpoints" / "step-00000004" / "generator.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    assert evaluate(run, finished / "pack", "--out", str(tmp_path / "ev")) == 0
    err = capsys.readouterr().err
    assert "step-00000004 is not usable" in err
    assert "scoring " + str(run / "checkpoints" / "step-00000002") in err


def _nan_checkpoint(run: Path) -> None:
    """checkpoints/step-00000006: step 4's, with a NaN generator and EMA (a manifest that verifies)."""
    from safetensors.torch import load_file

    src = run / "checkpoints" / "step-00000004"
    groups = {p.stem: load_file(p) for p in src.glob("*.safetensors")}
    for name in ("generator", "ema"):
        groups[name] = {k: torch.full_like(v, float("nan")) for k, v in groups[name].items()}
    state = json.loads((src / "state.json").read_text())
    state = {k: v for k, v in state.items() if k not in ("format", "step")}
    save_checkpoint(run / "checkpoints", 6, groups, state, keep=5)


def test_evaluate_of_a_nan_checkpoint_prints_and_writes_its_results_marked_in_strict_json(
    finished, run, tmp_path, capsys
):
    _nan_checkpoint(run)
    out = tmp_path / "ev"
    assert evaluate(run, finished / "pack", "--out", str(out), "--format", "json") == 0
    captured = capsys.readouterr()
    printed = strict_loads(captured.out)
    written = strict_loads((out / "results.json").read_text())
    for result in (printed, written):
        assert result["step"] == 6 and result["mean"]["psnr"] == "nan"
        assert sorted(result["not_finite"]) == sorted(result["images"])
    assert "NaN or infinite values on 2 of 2 images" in captured.err
    assert evaluate(run, finished / "pack", "--out", str(out)) == 0
    assert "nan!" in capsys.readouterr().out  # the text table marks them


# ---- 12: disk full while a checkpoint is written --------------------------------------------------------


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 256 KiB tmpfs where the test may mount one (root on Linux); else None."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_during_a_checkpoint_write_is_a_clean_stop(tiny_filesystem, tmp_path, monkeypatch):
    """safetensors reports ENOSPC as its own SafetensorError, not OSError: the write stops cleanly all the
    same, naming the cause, the previous checkpoint intact, no .tmp-step-* left."""
    from safetensors import SafetensorError

    folder = (tiny_filesystem or tmp_path) / "checkpoints"
    small = {"generator": {"w": torch.zeros(16)}}
    save_checkpoint(folder, 2, small, {"trainer": {}}, keep=5)
    big = {"generator": {"w": torch.zeros(1 << 17)}}  # 512 KiB: more than the filesystem holds
    if tiny_filesystem is None:  # no mount allowed: the library's own error, as it raises it on a full disk
        import safetensors.torch

        def full(*args, **kwargs):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

        monkeypatch.setattr(safetensors.torch, "serialize_file", full)
    with pytest.raises(CheckpointError, match="No space left on device") as caught:
        save_checkpoint(folder, 4, big, {"trainer": {}}, keep=5)
    assert "the previous checkpoint step-00000002 is intact" in str(caught.value)
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000002"]


# ---- 14: copied, malformed and loose checkpoints; damaged plan.json -------------------------------------


def test_a_copied_checkpoint_folder_is_passed_over_and_never_pruned(finished, run, tmp_path, capsys):
    copy = run / "checkpoints" / "step-00000020.bak"
    shutil.copytree(run / "checkpoints" / "step-00000004", copy)
    assert evaluate(run, finished / "pack", "--out", str(tmp_path / "ev")) == 0
    assert "step-00000020.bak is not a checkpoint folder's name" in capsys.readouterr().err
    assert main(["compare", str(run)]) == 0
    assert evaluate(copy, finished / "pack", "--out", str(tmp_path / "ev2")) == 0  # named: scored
    save_checkpoint(run / "checkpoints", 6, {"generator": {"w": torch.zeros(1)}}, {"trainer": {}}, keep=1)
    assert copy.is_dir()  # pruning keeps only step-NNNNNNNN folders in check


@pytest.mark.parametrize(
    ("manifest", "why"),
    [
        ("[]", "not a checkpoint manifest"),
        ('{"format": 2}', "lists no files"),
        ('{"format": 2, "step": 4, "files": {}}', "does not list state.json"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_passed_over(finished, run, tmp_path, capsys, manifest, why):
    (run / "checkpoints" / "step-00000004" / "manifest.json").write_text(manifest)
    assert evaluate(run, finished / "pack", "--out", str(tmp_path / "ev")) == 0
    err = capsys.readouterr().err
    assert why in err and "scoring " + str(run / "checkpoints" / "step-00000002") in err


def test_a_tensor_of_the_wrong_shape_is_named(finished, run, tmp_path, capsys):
    from safetensors.torch import load_file

    ckpt = run / "checkpoints" / "step-00000004"
    groups = {p.stem: load_file(p) for p in ckpt.glob("*.safetensors")}
    name = next(iter(groups["generator"]))
    groups["generator"][name] = torch.zeros(3, 1)
    state = {k: v for k, v in json.loads((ckpt / "state.json").read_text()).items() if k not in ("format", "step")}
    save_checkpoint(run / "checkpoints", 4, groups, state, keep=5)
    assert evaluate(run, finished / "pack", "--out", str(tmp_path / "ev")) == 2
    err = capsys.readouterr().err
    assert f"{name} is (3, 1) in the checkpoint" in err and "internal error" not in err


def test_a_loose_checkpoint_folder_is_a_plain_message(finished, run, tmp_path, capsys):
    loose = Path(shutil.copytree(run / "checkpoints" / "step-00000004", tmp_path / "step-00000004"))
    assert evaluate(loose, finished / "pack") == 2
    assert "is not inside its run folder" in capsys.readouterr().err


def _plan_json_variants(text: str) -> dict[str, str]:
    data = json.loads(text)
    return {
        "truncated": text[: len(text) // 2],
        "future": json.dumps({**data, "format": 99}),
        "edited": json.dumps({**data, "total_steps": data["total_steps"] + 1}),
    }


@pytest.mark.parametrize("variant", ["truncated", "future", "edited"])
def test_a_damaged_plan_json_is_a_plain_message_for_evaluate_compare_and_export(
    finished, run, tmp_path, capsys, variant
):
    plan_json = run / "plan.json"
    plan_json.write_text(_plan_json_variants(plan_json.read_text())[variant])
    words = {"truncated": "is unreadable", "future": "another version of ditsr-plan", "edited": "was edited"}
    for argv in (
        ["evaluate", str(run), "--pack", str(finished / "pack"), "--out", str(tmp_path / "ev")],
        ["compare", str(run)],
        ["export", str(run), "--merge", str(tmp_path / "out")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words[variant] in err and "internal error" not in err, (argv, err)


def test_a_damaged_run_json_is_a_plain_message_for_resume(finished, run, capsys):
    (run / "run.json").write_text('{"plan": ')
    plan = finished / "p" / "tiny.plan"
    assert main(["run", str(plan), "--out", str(run), "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert "run.json is damaged" in err and "internal error" not in err


# ---- 8, 9: export and evaluate on the base the run trained on, strictly ---------------------------------


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A finished PixArt + LoRA run (tiny, concat conditioning), its base and a 2-image pack."""
    root = tmp_path_factory.mktemp("lora")
    base = make_pixart(root)
    plan = pretrained_plan(root, f"model pixart path={base} lora=4 cond=concat", steps=2, ckpt=2)
    run_plan(compile_plan(plan), root / "run", quiet=True)
    return root


@pytest.fixture
def lora_copy(lora_run, tmp_path) -> Path:
    return Path(shutil.copytree(lora_run / "run", tmp_path / "run"))


def test_export_and_evaluate_refuse_another_base_naming_both(lora_run, finished, tmp_path, capsys):
    base = lora_run / "pixart"
    kept = Path(shutil.copytree(base, tmp_path / "kept"))
    try:
        shutil.rmtree(base)
        make_pixart(lora_run, seed=1)  # same shape, other weights, same folder
        assert main(["export", str(lora_run / "run"), "--merge", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "was made on base" in err and "now loads base" in err and str(base) in err
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
        assert evaluate(lora_run / "run", finished / "pack", "--out", str(tmp_path / "ev")) == 2
        err = capsys.readouterr().err
        assert "was made on base" in err and "now loads base" in err
    finally:
        shutil.rmtree(base)
        shutil.copytree(kept, base)


def test_export_refuses_an_empty_or_non_finite_adapter(lora_copy, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    adapter = lora_copy / "final" / "generator_ema" / "adapter_model.safetensors"
    tensors = load_file(adapter)
    save_file({}, str(adapter))
    assert main(["export", str(lora_copy), "--merge", str(tmp_path / "a")]) == 2
    assert "does not fit the run's generator (missing" in capsys.readouterr().err
    save_file({k: torch.full_like(v, float("inf")) for k, v in tensors.items()}, str(adapter))
    assert main(["export", str(lora_copy), "--merge", str(tmp_path / "b")]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    conditioning = lora_copy / "final" / "generator_ema" / "sr_conditioning.safetensors"
    save_file(tensors, str(adapter))
    save_file({**load_file(conditioning), "extra": torch.zeros(1)}, str(conditioning))
    assert main(["export", str(lora_copy), "--merge", str(tmp_path / "c")]) == 2
    assert "extra extra" in capsys.readouterr().err


def test_a_finished_run_without_ema_exports_its_trained_weights(lora_copy, tmp_path, capsys):
    shutil.rmtree(lora_copy / "final" / "generator_ema")
    assert main(["export", str(lora_copy), "--merge", str(tmp_path / "out")]) == 0
    assert "trained without EMA: exporting its trained weights" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "sr_pipeline.json").read_text())["source"]["ema"] is False
