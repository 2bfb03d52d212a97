"""A diffusers model class, imported without the ``__init__`` of the package that holds it.

``diffusers.models.transformers.__init__`` imports every transformer diffusers has, and through them
``peft`` and ``transformers`` (their LoRA loaders, hooks and tokenizer utilities): importing
``DiTTransformer2DModel`` the usual way costs seconds that a tiny run then spends in nothing else (about
half the imports of an 8-step CPU run). Its own module needs none of that: it is executed here under its
own name from its file, with its relative imports (``..attention``, ``..modeling_utils``) resolved as
usual. The class is the one diffusers' own imports give afterwards (``from diffusers import
DiTTransformer2DModel`` finds the module in ``sys.modules``). If the file is not where this diffusers
keeps it, the ordinary import is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any


def model_class(module: str, name: str) -> Any:
    """``getattr(importlib.import_module(module), name)`` for a module of ``diffusers.models``' sub-packages,
    without running the sub-package's ``__init__``."""
    package, _, leaf = module.rpartition(".")
    if module in sys.modules or package in sys.modules or not package.startswith("diffusers.models."):
        return getattr(importlib.import_module(module), name)
    models = importlib.util.find_spec("diffusers.models")
    if models is None or models.origin is None:
        return getattr(importlib.import_module(module), name)
    path = Path(models.origin).parent.joinpath(*package.split(".")[2:], f"{leaf}.py")
    spec = importlib.util.spec_from_file_location(module, path)
    if not path.is_file() or spec is None or spec.loader is None:
        return getattr(importlib.import_module(module), name)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        del sys.modules[module]
        raise
    return getattr(loaded, name)
