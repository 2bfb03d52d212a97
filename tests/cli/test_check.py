"""``ditsr-plan check`` (issue 23): every folder, model, VAE, LPIPS trunk, device and precision a run needs,
all reported at once with their plan positions and the --set that fixes each, without torch."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ditsr_plan.cli import main
from ditsr_plan.cli.setup import smoke_command
from ditsr_plan.testing import make_pixart, make_vae, write_photos

EXE = str(Path(sys.executable).with_name("ditsr-plan"))
REFERENCE = "plans/reference/pixart_v10.plan"
NO_CUDA = {"CUDA_VISIBLE_DEVICES": ""}  # the same answer on a GPU machine


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The stand-ins tiny-models writes: a pipeline-shaped PixArt folder, a VAE, three photos."""
    root = tmp_path_factory.mktemp("tiny")
    make_pixart(root / "PixArt-tiny", name="transformer")
    make_vae(root, name="sd-vae-tiny")
    write_photos(root / "hr")
    return root


def _sets(*items: str) -> list[str]:
    return [w for item in items for w in ("--set", item)]


def test_the_reference_plan_with_its_placeholders_lists_every_problem_with_positions():
    done = _cli("check", REFERENCE, env=NO_CUDA)
    assert done.returncode == 2, done.stderr
    err = done.stderr
    lines = Path(REFERENCE).read_text().splitlines()

    def line_of(start: str) -> int:
        return next(n for n, text in enumerate(lines, 1) if text.startswith(start))

    for start, key, fix in [
        ("model pixart", "model pixart path=", "--set model.path=FILE.pth"),
        ("latent vae", "latent vae path=", "--set latent.path=DIR"),
        ("data ", "data folder root=", "--set data.root=DIR"),
    ]:
        assert f"{REFERENCE}:{line_of(start)}:" in err and f"error: {key}" in err and fix in err
    # the CPU: bf16 is named at its line with the --set that fixes it
    run = line_of("run ")
    assert f"{REFERENCE}:{run}:11: error: run precision=bf16 is for CUDA" in err and "--set run.precision=auto" in err
    assert "Traceback" not in err and done.stdout.startswith("plan pixart_v10 · hash ")


def test_check_imports_no_torch(monkeypatch, capsys):
    code = (
        "import sys; from ditsr_plan.cli import main; rc = main(['check', 'plans/reference/pixart_v10.plan']); "
        "assert rc == 2, rc; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env={**os.environ, **NO_CUDA})


def test_with_the_tiny_folders_it_says_what_it_found(tiny, capsys):
    sets = _sets(
        f"model.path={tiny / 'PixArt-tiny'}",
        f"latent.path={tiny / 'sd-vae-tiny'}",
        f"data.root={tiny / 'hr'}",
        "run.precision=auto",
        "run.device=cpu",
        "lpips.backbone=random",
    )
    assert main(["check", REFERENCE, *sets]) == 0
    out = capsys.readouterr().out
    assert "PixArtTransformer2DModel, 4 latent channels, latent 8 x 8 (16 px), 2 blocks" in out
    assert "a pipeline's folder: its transformer/" in out
    assert "AutoencoderKL, 4 latent channels, x2 downsampling" in out
    assert out.count("weights diffusion_pytorch_model.safetensors (") == 2 and "MiB)" in out  # sizes on disk
    assert "data root:" in out and "3 image files" in out and "device: cpu (fp32" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("config_only", "holds a config.json but no weights file"),
        ("vae_as_model", "this folder holds an AutoencoderKL, not a PixArtTransformer2DModel"),
        ("empty_data", "no images in it"),
    ],
)
def test_a_folder_that_is_there_but_wrong_is_a_problem(tiny, tmp_path, capsys, change, message):
    model, data = tiny / "PixArt-tiny", tiny / "hr"
    if change == "config_only":
        model = tmp_path / "m"
        model.mkdir()
        (model / "config.json").write_text((tiny / "PixArt-tiny" / "transformer" / "config.json").read_text())
    elif change == "vae_as_model":
        model = tiny / "sd-vae-tiny"
    else:
        data = tmp_path / "empty"
        data.mkdir()
    sets = _sets(f"model.path={model}", f"latent.path={tiny / 'sd-vae-tiny'}", f"data.root={data}")
    sets += _sets("run.device=cpu", "run.precision=fp32", "lpips.backbone=random")
    assert main(["check", REFERENCE, *sets]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert "--set:" in err  # positioned at the --set that gave the folder


def test_a_missing_lpips_trunk_is_a_positioned_warning_with_the_fix(tiny, tmp_path, capsys, monkeypatch):
    """Not cached: the run would ask torchvision to download it (fine online, an error offline): a warning."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    sets = _sets(
        f"model.path={tiny / 'PixArt-tiny'}", f"latent.path={tiny / 'sd-vae-tiny'}", f"data.root={tiny / 'hr'}"
    )
    sets += _sets("run.device=cpu", "run.precision=fp32")
    assert main(["check", REFERENCE, *sets]) == 0
    err = capsys.readouterr().err
    assert "plans/v10.plan:7:1: warning: term 'lpips': the pretrained vgg trunk of LPIPS is not in" in err
    assert "--set lpips.backbone=random" in err and "error:" not in err
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"")
    assert main(["check", REFERENCE, *sets]) == 0
    captured = capsys.readouterr()
    assert "term 'lpips'" not in captured.err and "LPIPS (lpips): the pretrained vgg trunk" in captured.out


def test_a_device_that_is_not_here_is_positioned(monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert main(["check", "plans/demo.plan", "--set", "run.device=cuda"]) == 2
    err = capsys.readouterr().err
    assert "--set:1:5: error: run device=cuda, but there is no CUDA device here" in err
    assert "--set run.device=auto" in err


def test_the_demo_plan_is_ready_as_it_is(capsys):
    assert main(["check", "plans/demo.plan"]) == 0
    assert "nothing missing" in capsys.readouterr().err


def test_a_plan_error_is_reported_before_any_folder(capsys):
    assert main(["check", REFERENCE, "--set", "model.pth=x"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'pth' for block 'model'" in err and "no such folder" not in err


def test_check_reads_config_only(tiny, tmp_path, capsys):
    """A config.json with absurd sizes is read as JSON, never built: check answers at once, naming the value."""
    model = tmp_path / "huge"
    model.mkdir()
    config = json.loads((tiny / "PixArt-tiny" / "transformer" / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "num_layers": 10**30}))
    (model / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    sets = _sets(f"model.path={model}", f"latent.path={tiny / 'sd-vae-tiny'}", f"data.root={tiny / 'hr'}")
    assert main(["check", REFERENCE, *sets, *_sets("run.device=cpu", "run.precision=fp32")]) == 2
    err = capsys.readouterr().err  # refused as a problem of model.path, from the JSON alone
    assert f"num_layers={10**30}, beyond what a model holds" in err and "Traceback" not in err


def test_tiny_models_writes_the_stand_ins_and_refuses_a_folder_in_use(tmp_path, capsys):
    root = tmp_path / "tiny"
    assert main(["tiny-models", str(root)]) == 0
    assert (root / "PixArt-tiny" / "transformer" / "config.json").is_file()
    assert (root / "sd-vae-tiny" / "diffusion_pytorch_model.safetensors").is_file()
    assert sorted(p.name for p in (root / "hr").iterdir()) == ["astronaut.png", "chelsea.png", "coffee.png"]
    out = capsys.readouterr().out
    assert smoke_command(root) in out and smoke_command(root, command="run") in out
    assert main(["tiny-models", str(root)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err


def test_the_readme_smoke_test_is_what_tiny_models_prints_and_it_checks_clean(tiny, capsys, monkeypatch):
    readme = " ".join(Path("README.md").read_text().replace("\\\n", " ").split())
    for command in ("check", "run"):
        assert smoke_command(Path("tiny"), command=command) in readme
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert main(shlex.split(smoke_command(tiny))[1:]) == 0
    done = capsys.readouterr()
    assert "nothing missing" in done.err
    # then what it found is counted: the trained groups and the memory estimate (show --params' table)
    assert "adapter" in done.out and "injection" in done.out and "total" in done.out
    assert "memory on " in done.out and " GiB = weights " in done.out


def test_check_tells_the_lint_findings_that_do_not_stop_a_run(capsys):
    assert main(["check", "plans/demo.plan", "--set", "eval.steps=4"]) == 0
    err = capsys.readouterr().err
    assert "nothing missing: the run can start" in err and "lint: 1 finding" in err
    assert "D001 the eval's sampler (4 steps, trailing spacing) ends at timestep 249" in err
    assert main(["check", "plans/demo.plan"]) == 0
    assert "lint:" not in capsys.readouterr().err  # a clean plan: nothing to tell
