"""Your own generator: ``model custom factory=package.module:function [file=path.py] key=value...``.

The factory is called with the latent's channels and size and every other key of the line (numbers and
``true``/``false`` converted, the rest as text) and returns an ``nn.Module`` that follows the protocol:

    forward(noisy, lr_latent, timesteps, aug_level) -> the predicted velocity, shaped like ``noisy``

``noisy`` and ``lr_latent`` are N x C x h x w latents, ``timesteps`` N integers, ``aug_level`` N floats (the std
of the noise added to the LR latent; 0 at validation). Optional: ``trainable_parameters()`` (default: every
parameter that requires a gradient), ``save_final(folder)`` (default: its state dict as safetensors).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

import torch
from torch import nn

from ditsr_plan.settings.schemas import CustomModel

from ..loading import LoadError

RESERVED = ("factory", "file", "checkpointing")


def _their_traceback(exc: BaseException) -> str:
    """The traceback from the user's code on (this module's own frame left out)."""
    frames = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, frames.tb_next if frames else None))


def _value(text):
    if not isinstance(text, str):
        return text
    if text in ("true", "false"):
        return text == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _from_python_itself(module_name: str) -> bool:
    """A module of the standard library or a builtin one: no generator factory lives there."""
    top = module_name.split(".")[0]
    return top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "__main__"


REMOTE_LOADERS = ("torch.hub", "huggingface_hub")  # modules whose functions fetch code or weights from a hub
REMOTE_FUNCTIONS = ("from_pretrained", "hf_hub_download", "snapshot_download", "load_state_dict_from_url")


def _fetches(module_name: str, function: str) -> bool:
    """A factory that would download (and, for torch.hub, run) code or weights: the tool never downloads."""
    return module_name.startswith(REMOTE_LOADERS) or function.rpartition(".")[2] in REMOTE_FUNCTIONS


def _taken(module_name: str, file: Path) -> bool:
    """A name that another installed or imported module already has: a file= module under it would replace
    that module for the whole process (numpy, torch, this tool). The file itself, loaded before or found on
    the path, does not count."""
    top = module_name.split(".")[0]
    if top in sys.modules:
        where = getattr(sys.modules[top], "__file__", None)
    else:
        try:
            spec = importlib.util.find_spec(top)  # a top-level name: found without being imported
        except (ImportError, ValueError):
            return False
        if spec is None:
            return False
        where = spec.origin
    return not where or Path(where).resolve() != file.expanduser().resolve()


def _factory(spec: str, file: str | None):
    module_name, sep, function = spec.partition(":")
    if not sep or not module_name or not function:
        raise LoadError(f"model custom factory={spec}: expected package.module:function")
    if _from_python_itself(module_name):
        raise LoadError(
            f"model custom factory={spec}: '{module_name.split('.')[0]}' is part of Python itself (the standard "
            "library or a builtin module), not a generator factory; it is not imported. Name a function of your "
            "own module that returns an nn.Module"
        )
    if _fetches(module_name, function):
        raise LoadError(
            f"model custom factory={spec}: that function downloads code or weights from a hub, and this tool never "
            "downloads; name a function of your own module that builds the model from local files"
        )
    if file and _taken(module_name, Path(file)):
        raise LoadError(
            f"model custom factory={spec} file={file}: '{module_name.split('.')[0]}' is the name of an installed "
            "module, which the file would replace for the whole run; name the module after your file "
            f"(factory={Path(file).stem}:{function})"
        )
    try:
        if file:
            path = Path(file).expanduser()
            if not path.is_file():
                raise LoadError(f"model custom file={file}: no such file")
            if path.suffix != ".py":
                raise LoadError(f"model custom file={file}: not a Python file (its name does not end in .py)")
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            assert module_spec is not None and module_spec.loader is not None  # a .py file has a source loader
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except LoadError:
        raise
    except ModuleNotFoundError as exc:
        if file or exc.name != module_name.partition(".")[0]:
            raise LoadError(f"model custom: importing {module_name} failed:\n{_their_traceback(exc)}") from None
        raise LoadError(
            f"model custom factory={spec}: no module named '{exc.name}' on Python's path (a module beside the plan "
            f"is not searched): add file=PATH.py to the model block, or put its folder on PYTHONPATH"
        ) from None
    except Exception as exc:
        raise LoadError(f"model custom: importing {module_name} failed:\n{_their_traceback(exc)}") from None
    if not hasattr(module, function):
        raise LoadError(f"model custom factory={spec}: {module_name} has no '{function}'")
    factory = getattr(module, function)
    if not callable(factory):
        raise LoadError(
            f"model custom factory={spec}: {module_name}.{function} is not a function (its type is "
            f"{type(factory).__name__}); name a function that returns an nn.Module"
        )
    return factory


class CustomGenerator(nn.Module):
    """The user's module, checked once on a small input."""

    def __init__(self, settings: CustomModel, latent_channels: int, latent_size: int):
        super().__init__()
        factory = _factory(settings.factory, settings.file)
        extra = settings.model_extra or {}  # every key but factory and file is the factory's
        options = {k: _value(v) for k, v in extra.items() if k not in RESERVED and v is not None}
        try:
            inner = factory(latent_channels=latent_channels, latent_size=latent_size, **options)
        except Exception as exc:
            raise LoadError(f"model custom factory={settings.factory} raised:\n{_their_traceback(exc)}") from None
        if not isinstance(inner, nn.Module):
            raise LoadError(
                f"model custom factory={settings.factory} returned {type(inner).__name__}, not a torch nn.Module: "
                "the factory must return the generator (an nn.Module)"
            )
        self.inner = inner
        self.spec = settings.factory
        self._probe(latent_channels, min(latent_size, 8))

    def _probe(self, c: int, size: int) -> None:
        x = torch.zeros(1, c, size, size)
        try:
            with torch.no_grad():
                out = self.inner(x, x, torch.zeros(1, dtype=torch.long), torch.zeros(1))
        except Exception as exc:
            raise LoadError(
                f"model custom factory={self.spec}: its forward(noisy, lr_latent, timesteps, aug_level) failed on a "
                f"1 x {c} x {size} x {size} latent:\n{_their_traceback(exc)}"
            ) from None
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LoadError(
                f"model custom factory={self.spec}: forward must return the velocity shaped like its input "
                f"{tuple(x.shape)}, it returned {shape}"
            )

    def forward(self, noisy, lr_latent, timesteps, aug_level=None):
        if aug_level is None:
            aug_level = noisy.new_zeros(noisy.shape[0])
        return self.inner(noisy, lr_latent, timesteps, aug_level)

    def trainable_parameters(self):
        if hasattr(self.inner, "trainable_parameters"):
            return list(self.inner.trainable_parameters())
        return [p for p in self.parameters() if p.requires_grad]

    def save_final(self, folder: Path) -> None:
        own = getattr(self.inner, "save_final", None)  # the user's module may save itself
        if own is not None:
            own(folder)
            return
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous().cpu() for k, v in self.inner.state_dict().items()}, str(folder / "model.safetensors")
        )

    def describe(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        trained = sum(p.numel() for p in self.trainable_parameters())
        return {"kind": "custom", "source": self.spec, "parameters": total, "trained": trained}
