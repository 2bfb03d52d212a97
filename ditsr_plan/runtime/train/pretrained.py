"""Loading diffusers models (``from_pretrained``) with errors that name the folder and the cause.

diffusers raises a bare ``OSError`` for a folder that does not exist, a folder without ``config.json`` and
a hub id that cannot be reached, worded for the hub; here each becomes a :class:`LoadError` that says
which setting pointed where, what was found there, and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import RunFailure


class LoadError(RunFailure):
    """A pretrained model (VAE, transformer) that cannot be loaded."""


def _looks_local(path: str) -> bool:
    return os.path.isabs(path) or path.startswith((".", "~")) or os.path.exists(path) or path.count("/") != 1


def _listing(folder: Path, most: int = 8) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")
    return f"it holds {shown}"


def load_pretrained(cls, path: str, subfolder: str | None, what: str, **kwargs):
    """``cls.from_pretrained(path, subfolder=...)``; ``what`` names the setting (``latent vae path``)."""
    where = os.path.expanduser(path)
    if _looks_local(path):
        folder = Path(where)
        if not folder.is_dir():
            raise LoadError(f"{what}={path}: no such folder")
        inner = folder / subfolder if subfolder else folder
        if not inner.is_dir():
            raise LoadError(f"{what}={path}: no subfolder '{subfolder}' ({_listing(folder)})")
        if not (inner / "config.json").is_file():
            hint = (
                " -- is it the model's top folder? give subfolder=..."
                if any((p / "config.json").is_file() for p in inner.iterdir() if p.is_dir())
                else ""
            )
            raise LoadError(f"{what}={path}: no config.json in {inner} ({_listing(inner)}){hint}")
    try:
        return cls.from_pretrained(where, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as exc:
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        offline = (
            ""
            if _looks_local(path)
            else (
                "; a hub id needs the network (or the Hugging Face cache): download the model once and give its folder"
            )
        )
        raise LoadError(f"{what}={path}: cannot load a {cls.__name__}: {cause}{offline}") from None
