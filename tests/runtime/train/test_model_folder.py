"""``path=`` takes the model's own folder or a whole pipeline's, and says which it found (issue 23)."""

from __future__ import annotations

import pytest

from ditsr_plan.runtime.train.loading import LoadError, model_folder


@pytest.fixture
def pipeline(tmp_path):
    for sub in ("transformer", "vae"):
        (tmp_path / "pipe" / sub).mkdir(parents=True)
        (tmp_path / "pipe" / sub / "config.json").write_text("{}")
    return tmp_path / "pipe"


def test_the_pipeline_folder_with_or_without_subfolder(pipeline):
    assert model_folder(str(pipeline), "transformer", "model pixart path") == (
        pipeline / "transformer",
        "a pipeline's folder: its transformer/",
    )
    assert model_folder(str(pipeline), None, "model pixart path", "transformer")[0] == pipeline / "transformer"
    assert model_folder(str(pipeline), None, "latent vae path", "vae") == (
        pipeline / "vae",
        "a pipeline's folder: its vae/",
    )


def test_the_transformer_folder_itself_even_with_subfolder_transformer(pipeline):
    inner, which = model_folder(str(pipeline / "transformer"), "transformer", "model pixart path")
    assert inner == pipeline / "transformer" and "model's own folder" in which and "subfolder= not needed" in which


@pytest.mark.parametrize("subfolder", ["-", ""])
def test_subfolder_dash_or_empty_is_the_folder_itself(pipeline, subfolder):
    assert model_folder(str(pipeline / "vae"), subfolder, "latent vae path", "vae") == (
        pipeline / "vae",
        "the model's own folder",
    )
    with pytest.raises(LoadError, match=r"no config\.json in .* give subfolder="):
        model_folder(str(pipeline), subfolder, "model pixart path", "transformer")


def test_a_missing_subfolder_lists_what_is_there(pipeline):
    with pytest.raises(LoadError, match=r"no subfolder 'unet' \(it holds transformer/, vae/\)"):
        model_folder(str(pipeline), "unet", "model pixart path")
