"""One module per loss-term kind, one interface (:class:`~.base.LossTerm`).

There is no registry here: the compiled graph names each term's class (``Term.implementation``, from the
kind's schema in ``settings/schemas.py``, the registry of kinds), and :func:`build_term` imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

from ditsr_plan.settings.schemas import TermKind

from .base import LossTerm, StepTensors, TermContext, TermSetupError

__all__ = ["LossTerm", "StepTensors", "TermContext", "TermSetupError", "build_term", "term_class"]


def term_class(implementation: str) -> type[LossTerm[Any]]:
    """The class ``module:Class`` names."""
    module, _, name = implementation.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
        raise TypeError(f"{implementation} is not a LossTerm")
    return cls


def build_term(name: str, settings: TermKind, context: TermContext) -> LossTerm[Any]:
    """The runtime's term for ``settings``, of the class its kind names (``implementation``)."""
    return term_class(type(settings).implementation)(name, settings, context)
