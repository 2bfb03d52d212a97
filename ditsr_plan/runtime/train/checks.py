"""What a step checks and measures beyond its loss: the first-live check and the gradient diagnostics."""

from __future__ import annotations

import torch

from ..errors import RunFailure
from .terms import StepTensors


class TermCheckError(RunFailure):
    """A term that became live but does not train the generator (the edge_gtmask bug)."""


def check_first_live(step: int, raw: dict[str, torch.Tensor], s: StepTensors, checked: set[str]) -> None:
    """The first time a term is live: a finite scalar whose gradient reaches the generator's output.
    Adds the names that pass to ``checked``."""
    for name, value in raw.items():
        if name in checked:
            continue
        problem = None
        if value.ndim != 0:
            problem = f"returned a tensor of shape {tuple(value.shape)}, not a scalar"
        elif not torch.isfinite(value.detach()):
            problem = f"returned {float(value.detach())}"
        elif not value.requires_grad:
            problem = "has no gradient path to the generator"
        else:
            (grad,) = torch.autograd.grad(value, s.v_hat, retain_graph=True, allow_unused=True)
            if grad is None or not bool(grad.abs().sum() > 0):
                problem = "has no gradient path to the generator (its gradient on the model output is 0)"
        if problem:
            raise TermCheckError(f"term '{name}' became live at step {step} but {problem}")
        checked.add(name)


def gradient_diagnostics(raw: dict[str, torch.Tensor], weights: dict[str, float], s: StepTensors) -> dict:
    """For the live terms: the norm of each weighted term's gradient with respect to the model output
    (the predicted velocity), and the pairwise cosine similarity of those gradients -- negative when
    two terms pull the output in opposite directions (the loss notes' "conflicting gradients")."""
    grads = {}
    for name, value in raw.items():
        (g,) = torch.autograd.grad(weights[name] * value, s.v_hat, retain_graph=True, allow_unused=True)
        if g is not None:
            grads[name] = g.detach().float().flatten()
    names = list(grads)
    cosine = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            denom = grads[a].norm() * grads[b].norm()
            cosine[f"{a}|{b}"] = float(grads[a] @ grads[b] / denom) if denom > 0 else None
    return {"norm": {n: float(g.norm()) for n, g in grads.items()}, "cosine": cosine}
