"""Model folders and factories given carelessly or with hostile intent (issue #19, items 6, 7, 14, 17): the tool
never downloads, a missing folder fails at once, a folder of the wrong class is named as such before loading,
a factory from Python itself is refused without importing it, and file= is found beside the plan."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import torch

from ditsr_plan.runtime.errors import RunFailure
from ditsr_plan.testing import make_dit, make_pixart, make_vae, pretrained_plan, trainer_for

torch.set_num_threads(1)


@pytest.fixture
def no_network(monkeypatch):
    """Any download or connection attempt fails the test (HF_HUB_OFFLINE alone would only change the error)."""

    def refuse(*args, **kwargs):
        pytest.fail(f"a network access was attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name, module in list(sys.modules.items()):
        if name.startswith(("huggingface_hub", "diffusers")):
            for attr in ("hf_hub_download", "snapshot_download"):
                if hasattr(module, attr):
                    monkeypatch.setattr(module, attr, refuse)


def _plan(tmp_path: Path, model_line: str, latent: str | None = None) -> Path:
    plan = pretrained_plan(tmp_path, model_line)
    if latent is not None:
        plan.write_text(plan.read_text().replace(f"latent vae path={tmp_path / 'vae'}", latent))
    return plan


# ---- 17. local files only --------------------------------------------------------------------------------------


@pytest.mark.parametrize("written", ["stabilityai/sd-vae-ft-ema", "checkpoints/sd-vae-ft-ema", "/no/such/vae"])
def test_a_missing_vae_folder_fails_at_once_without_the_network(tmp_path, no_network, written):
    """The original input: a hub-id-like path was retried over the network for about a minute."""
    import diffusers  # noqa: F401  (its hub functions are patched by no_network once imported)

    plan = _plan(tmp_path, "model dit", latent=f"latent vae path={written}")
    with pytest.raises(RunFailure, match=r"latent vae path=\S+: no such folder \(this tool never downloads"):
        trainer_for(plan)


def test_a_missing_model_folder_fails_at_once_without_the_network(tmp_path, no_network):
    plan = _plan(tmp_path, "model pixart path=PixArt-alpha/PixArt-XL-2-512x512 subfolder=transformer")
    with pytest.raises(RunFailure, match=f"model pixart path={tmp_path}/PixArt-alpha/PixArt-XL-2-512x512: no such"):
        trainer_for(plan)


def test_a_local_model_loads_with_local_files_only(tmp_path, no_network, monkeypatch):
    from diffusers import PixArtTransformer2DModel

    seen = {}
    original = PixArtTransformer2DModel.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PixArtTransformer2DModel, "from_pretrained", classmethod(spy))
    trainer_for(_plan(tmp_path, f"model pixart path={make_pixart(tmp_path)} lora=4"))
    assert seen["local_files_only"] is True


# ---- 14. a folder of the wrong class is named before loading -------------------------------------------------


def test_model_pixart_given_a_vae_folder(tmp_path):
    with pytest.raises(RunFailure, match="this folder holds an AutoencoderKL, not a PixArtTransformer2DModel"):
        trainer_for(_plan(tmp_path, f"model pixart path={tmp_path / 'vae'} lora=4"))


def test_latent_vae_given_a_transformer_folder(tmp_path):
    pixart = make_pixart(tmp_path)
    with pytest.raises(RunFailure, match="this folder holds a PixArtTransformer2DModel, not an AutoencoderKL"):
        trainer_for(_plan(tmp_path, "model dit", latent=f"latent vae path={pixart}"))


def test_model_dit_given_a_pixart_folder(tmp_path):
    pixart = make_pixart(tmp_path)
    with pytest.raises(RunFailure, match="this folder holds a PixArtTransformer2DModel, not a DiTTransformer2DModel"):
        trainer_for(_plan(tmp_path, f"model dit path={pixart} lora=4"))


def test_legacy_class_names_are_read_as_diffusers_remaps_them(tmp_path):
    """PixArt-alpha's and DiT's own folders say Transformer2DModel: they are still the right class."""
    for make, kind in ((make_pixart, "pixart"), (make_dit, "dit")):
        folder = make(tmp_path / kind)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "_class_name": "Transformer2DModel"}))
        trainer_for(_plan(tmp_path / kind, f"model {kind} path={folder} lora=4"))
    with pytest.raises(RunFailure, match="holds a DiTTransformer2DModel, not a PixArtTransformer2DModel"):
        trainer_for(_plan(tmp_path / "x", f"model pixart path={tmp_path / 'dit' / 'dit'} lora=4"))


def test_a_broken_config_is_a_plain_error(tmp_path):
    vae = make_vae(tmp_path / "v")
    (vae / "config.json").write_text("[1, 2")
    with pytest.raises(RunFailure, match=r"config\.json is not a readable JSON file"):
        trainer_for(_plan(tmp_path, "model dit", latent=f"latent vae path={vae}"))


# ---- 6. a plan is code: what a factory may be -------------------------------------------------------------------


@pytest.mark.parametrize("factory", ["os:system", "antigravity:fly", "this:s", "builtins:exec", "json.decoder:x"])
def test_a_factory_from_python_itself_is_refused_without_importing_it(tmp_path, factory):
    """The original input ``factory=os:system`` got as far as calling os.system; ``antigravity`` opens a browser
    when imported."""
    module = factory.partition(":")[0]
    was_imported = module in sys.modules
    with pytest.raises(RunFailure, match=f"factory={factory}: .* is part of Python itself .* it is not imported"):
        trainer_for(_plan(tmp_path, f"model custom factory={factory}"))
    assert (module in sys.modules) == was_imported


def test_a_file_that_claims_a_standard_module_name_is_refused(tmp_path):
    (tmp_path / "gen.py").write_text("raise SystemExit('executed')\n")
    with pytest.raises(RunFailure, match="is part of Python itself"):
        trainer_for(_plan(tmp_path, "model custom factory=json:loads file=gen.py"))
    assert "executed" not in repr(sys.modules.get("json"))


def test_a_factory_that_is_not_callable_or_returns_no_module(tmp_path):
    (tmp_path / "gen.py").write_text("SIZE = 3\n\ndef make(latent_channels, latent_size):\n    return [1, 2]\n")
    with pytest.raises(RunFailure, match=r"factory=gen_a:SIZE: gen_a\.SIZE is not a function \(its type is int\)"):
        trainer_for(_plan(tmp_path, "model custom factory=gen_a:SIZE file=gen.py"))
    with pytest.raises(RunFailure, match=r"returned list, not a torch nn\.Module: the factory must return"):
        trainer_for(_plan(tmp_path, "model custom factory=gen_b:make file=gen.py"))


# ---- 7. file= is the file beside the plan, not one of the current folder -----------------------------------------

GEN = """from torch import nn


class Net(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, noisy, lr_latent, timesteps, aug_level):
        return self.conv(noisy)


def make(latent_channels, latent_size, tag="beside"):
    net = Net(latent_channels)
    net.tag = tag
    return net
"""


def test_file_is_found_beside_the_plan(tmp_path, monkeypatch):
    """The original input: ``file=gen.py`` ran ./gen.py of the current folder, not the one beside the plan."""
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "gen.py").write_text(GEN)
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "gen.py").write_text("raise RuntimeError('the wrong gen.py ran')\n")
    plan = _plan(tmp_path / "exp", "model custom factory=sr_gen_beside:make file=gen.py")
    monkeypatch.chdir(tmp_path / "cwd")
    assert trainer_for(plan).model.inner.tag == "beside"
