"""One module per loss-term kind, one interface (:class:`~.base.LossTerm`)."""

from __future__ import annotations

from .base import LossTerm, StepTensors, TermSetupError
from .ffl import Ffl
from .latent_l1 import LatentL1
from .lpips_term import Lpips
from .patchgan import PatchGan
from .regions import Edge, Flat
from .vpred import VPred

__all__ = ["LossTerm", "StepTensors", "TermSetupError", "build_term"]


def build_term(name: str, kind: str, settings: dict, diffusion) -> LossTerm:
    if kind == "vpred":
        return VPred(name, settings, diffusion)
    classes = {c.kind: c for c in (LatentL1, Lpips, Edge, Flat, Ffl, PatchGan)}
    return classes[kind](name, settings)
