"""``model pixart path=FILE.pth``: the original PixArt-alpha checkpoint, names converted to diffusers'
layout, read with weights_only=True; its learned null caption as ``caption=null``; ``caption=FILE.pth``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from ditsr_plan.runtime.train.generators.pretrained import SRTransformer
from ditsr_plan.runtime.train.loading import LoadError
from ditsr_plan.settings import schemas
from ditsr_plan.testing import make_pixart, save_original_pixart

torch.set_num_threads(2)


def _generator(path: Path, **kw) -> SRTransformer:
    return SRTransformer("pixart", schemas.PixartModel(path=str(path), **kw), 4, 16, 64, "cpu")


def _inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g), torch.tensor([30, 700])


def _base(folder: Path, noisy, t, caption: torch.Tensor):
    from diffusers import PixArtTransformer2DModel

    base = PixArtTransformer2DModel.from_pretrained(folder).eval()
    added = {"resolution": None, "aspect_ratio": None}
    hidden = caption.expand(2, -1, -1)
    return base(noisy, encoder_hidden_states=hidden, timestep=t, added_cond_kwargs=added).sample[:, :4]


@pytest.mark.parametrize("heads", ["from the width (72 per head)", "from a config.json beside it"])
def test_the_original_checkpoint_is_the_same_model_with_its_learned_null_caption(tmp_path, heads):
    if heads.startswith("from the width"):
        folder = make_pixart(tmp_path, num_attention_heads=1, attention_head_dim=72, cross_attention_dim=72)
    else:
        folder = make_pixart(tmp_path)
        shutil.copy(folder / "config.json", tmp_path / "config.json")
    pth = save_original_pixart(folder, tmp_path / "PixArt-tiny.pth")
    model = _generator(pth, lora=4)
    null = torch.load(pth, weights_only=True)["state_dict"]["y_embedder.y_embedding"]
    assert torch.equal(model.caption[0], null)  # caption=null is the checkpoint's y_embedding
    noisy, lr, t = _inputs()
    with torch.no_grad():
        ours = model.eval()(noisy, lr, t)
    assert torch.allclose(ours, _base(folder, noisy, t, null[None]), atol=1e-5)
    assert model.fingerprint["weights"] == {pth.name: model.fingerprint["weights"][pth.name]}


def test_a_diffusers_folder_takes_the_null_caption_from_a_pth(tmp_path):
    folder = make_pixart(tmp_path)
    pth = save_original_pixart(folder, tmp_path / "orig.pth", caption_tokens=5)
    model = _generator(folder, caption=str(pth))
    assert model.caption.shape == (1, 5, 8)
    assert torch.equal(model.caption[0], torch.load(pth, weights_only=True)["state_dict"]["y_embedder.y_embedding"])


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless, but code: a weights-only load must refuse it


def test_a_pickle_with_code_is_refused_without_torchs_advice_to_disable_the_check(tmp_path):
    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x_embedder.proj.weight": torch.zeros(1)}, "extra": Payload()}, bad)
    with pytest.raises(LoadError) as info:
        _generator(bad)
    text = str(info.value)
    assert "refused" in text and "getcwd" in text
    assert "weights_only" not in text and "will likely succeed" not in text and "safe_globals" not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint", "not a readable PyTorch checkpoint"),
        ({"state_dict": {"something.else": torch.zeros(2)}}, "not an original PixArt-alpha checkpoint"),
        ([torch.zeros(2)], "not a state dict of tensors"),
    ],
)
def test_a_file_that_is_not_a_pixart_checkpoint_is_named(tmp_path, content, message):
    path = tmp_path / "x.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(LoadError, match=message):
        _generator(path)


def test_legacy_format_and_ddp_prefixes_are_read(tmp_path):
    from ditsr_plan.runtime.train.generators.pixart_pth import read_checkpoint

    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": {"module.t_block.1.bias": torch.ones(2)}}, path, _use_new_zipfile_serialization=False)
    assert list(read_checkpoint(path, "model pixart path")) == ["t_block.1.bias"]


def test_a_small_pth_that_describes_a_huge_model_is_refused_before_it_is_built(tmp_path):
    """The model's shape is read off the tensors' names and shapes: a 14 KB file naming block 4999 would build a
    5000-block transformer (found by an attacker's review); it is bounded like a config.json."""
    folder = make_pixart(tmp_path)
    original = save_original_pixart(folder, tmp_path / "PixArt-XL-2-512x512.pth")
    shutil.copy(folder / "config.json", tmp_path / "config.json")  # the tiny model's heads (16 wide: not 72s)
    state = torch.load(original, weights_only=True)
    state["state_dict"]["blocks.4999.mlp.fc1.bias"] = torch.zeros(1)
    torch.save(state, original)
    with pytest.raises(LoadError, match="num_layers=5000, beyond what a model holds"):
        _generator(original)
