"""Loading diffusers models (``from_pretrained``) from local folders, with errors that name the folder and
the cause.

The tool never downloads: every path is a local folder (a relative one was resolved against the plan's
folder when the plan was loaded), a missing one fails at once ("no such folder"), and ``from_pretrained``
runs with ``local_files_only=True``, so that nothing is ever looked up on the Hugging Face hub. Before
loading, the folder's ``config.json`` must name the class the setting expects (``_class_name``): a VAE
folder given as the transformer is refused in words, not with a shape error deep inside diffusers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import RunFailure

# the class names older diffusers wrote for today's classes, by norm_type (diffusers' own remapping)
LEGACY_CLASSES = {
    "Transformer2DModel": {"ada_norm_zero": "DiTTransformer2DModel", "ada_norm_single": "PixArtTransformer2DModel"}
}


class LoadError(RunFailure):
    """A pretrained model (VAE, transformer) that cannot be loaded."""


def _listing(folder: Path, most: int = 8) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")
    return f"it holds {shown}"


def _article(name: str) -> str:
    return "an" if name[:1].upper() in "AEIOU" else "a"


NO_SUBFOLDER = ("", "-")  # subfolder= (empty) or subfolder=-: the folder itself


def _chosen(folder: Path, subfolder: str | None, default: str | None) -> tuple[Path, str]:
    """The folder that should hold ``config.json``, and which one it is in words. ``path=`` may name a whole
    pipeline's folder (its ``subfolder``, else ``default``, holds the model) or the model's folder itself."""
    own = (folder / "config.json").exists()
    if subfolder in NO_SUBFOLDER:
        return folder, "the model's own folder"
    if subfolder is not None:
        if (folder / subfolder).is_dir():
            return folder / subfolder, f"a pipeline's folder: its {subfolder}/"
        if own:
            return folder, f"the model's own folder (there is no {subfolder}/ in it: subfolder= not needed)"
        return folder / subfolder, ""
    if not own and default and (folder / default / "config.json").is_file():
        return folder / default, f"a pipeline's folder: its {default}/"
    return folder, "the model's own folder"


def model_folder(path: str, subfolder: str | None, what: str, default: str | None = None) -> tuple[Path, str]:
    """The local folder that holds ``config.json`` and which one it is (``a pipeline's folder: its
    transformer/``), or a :class:`LoadError` saying what is there instead. Reads no weights, imports no torch."""
    folder = Path(os.path.expanduser(path))
    if folder.exists() and not folder.is_dir():
        raise LoadError(f"{what}={path}: not a folder (a diffusers model is a folder with config.json)")
    if not folder.is_dir():
        raise LoadError(
            f"{what}={path}: no such folder (this tool never downloads: get the model once, e.g. with "
            "'huggingface-cli download ID --local-dir DIR', and give that folder)"
        )
    inner, which = _chosen(folder, subfolder, default)
    if not inner.is_dir():
        raise LoadError(f"{what}={path}: no subfolder '{subfolder}' ({_listing(folder)})")
    config = inner / "config.json"
    if config.exists() and not config.is_file():
        raise LoadError(f"{what}={path}: {config} is not a regular file (a folder, a device or a FIFO): it is not read")
    if config.is_file() and config.stat().st_size > MAX_CONFIG_BYTES:
        raise LoadError(f"{what}={path}: {config} is {config.stat().st_size} bytes: too large for a model config")
    if not config.is_file():
        hint = (
            " -- is it the model's top folder? give subfolder=..."
            if any((p / "config.json").is_file() for p in inner.iterdir() if p.is_dir())
            else ""
        )
        raise LoadError(f"{what}={path}: no config.json in {inner} ({_listing(inner)}){hint}")
    return inner, which


MAX_CONFIG_BYTES = 1 << 20  # a diffusers config.json is a few KB


def check_class(inner: Path, expected: str, what: str, path: str) -> dict:
    """Refuse a folder whose ``config.json`` names another class than ``expected`` (read before loading);
    the configuration otherwise."""
    try:
        config = json.loads((inner / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise LoadError(f"{what}={path}: {inner / 'config.json'} is not a readable JSON file ({exc})") from None
    if not isinstance(config, dict):
        raise LoadError(f"{what}={path}: {inner / 'config.json'} is not a model configuration (not a JSON object)")
    check_bounds(config, what, path)
    found = config.get("_class_name")
    # as diffusers remaps it: PixArt-alpha's own folders say Transformer2DModel
    if isinstance(found, str) and found in LEGACY_CLASSES:
        found = LEGACY_CLASSES[found].get(str(config.get("norm_type")), found)
    if isinstance(found, str) and found != expected:
        raise LoadError(
            f"{what}={path}: this folder holds {_article(found)} {found}, not {_article(expected)} {expected}"
            " -- check which folder the setting names"
        )
    return config


# what a sane diffusers config holds at most: a config is read before anything is built, and a huge value
# (num_layers=10**30) would make the model's construction hang or allocate without end
CONFIG_BOUNDS = {"num_layers": 512, "num_attention_heads": 512, "attention_head_dim": 4096, "sample_size": 4096}
CONFIG_MOST = 1 << 20  # any other whole number (caption_channels 4096, num_embeds_ada_norm 1000, ...)


def check_bounds(config: dict, what: str, path: str) -> None:
    """Refuse a config.json whose whole numbers are beyond what any real model holds."""
    for key, item in config.items():
        values = item if isinstance(item, list) else [item]
        if len(values) > 64:
            raise LoadError(f"{what}={path}: config.json has {key} with {len(values)} values: is it the right file?")
        most = CONFIG_BOUNDS.get(key, CONFIG_MOST)
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not -most <= value <= most:
                raise LoadError(
                    f"{what}={path}: config.json has {key}={value}, beyond what a model holds (at most {most}): "
                    "is it the right file?"
                )


def config_only(cls, path: str, subfolder: str | None, what: str, default: str | None = None):
    """The model ``cls`` as the folder's ``config.json`` describes it, on the meta device: its shapes and
    names without reading (or allocating) a single weight."""
    import torch
    from diffusers.utils import logging

    inner, _ = model_folder(path, subfolder, what, default)
    check_class(inner, cls.__name__, what, path)
    level = logging.get_verbosity()
    try:
        logging.set_verbosity_error()  # not "config attributes ... will be ignored" for keys older diffusers wrote
        config = cls.load_config(str(inner))
        with torch.device("meta"):
            return cls.from_config(config)
    except Exception as exc:  # diffusers raises its own types for a config it cannot build
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LoadError(f"{what}={path}: cannot build {_article(cls.__name__)} {cls.__name__}: {cause}") from None
    finally:
        logging.set_verbosity(level)


def load_pretrained(cls, path: str, subfolder: str | None, what: str, default: str | None = None, **kwargs):
    """``cls.from_pretrained(FOLDER, local_files_only=True)`` of the folder :func:`model_folder` finds (the
    model's own, or ``subfolder`` -- else ``default`` -- of a pipeline's); ``what`` names the setting
    (``latent vae path``). The model gets ``loaded_from``: that folder and which one it is, in words."""
    inner, which = model_folder(path, subfolder, what, default)
    check_class(inner, cls.__name__, what, path)
    try:
        model = cls.from_pretrained(str(inner), local_files_only=True, **kwargs)
    except Exception as exc:  # diffusers, safetensors and torch each raise their own types for a bad folder
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LoadError(f"{what}={path}: cannot load {_article(cls.__name__)} {cls.__name__}: {cause}") from None
    model.loaded_from = (inner, which)
    return model
