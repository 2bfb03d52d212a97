"""The scripts' "hybrid" injection of the pyramid adapter's features into PixArt's blocks, and the style
vector added to the timestep embedding (shared/reference-setup.md, "Injection into a block").

For an injected block with features ``f`` (N x tokens x width) and gate ``a``:

- ``shift, scale = modulation(LayerNorm(f))`` (LayerNorm without affine, linear width -> 2 width, zero-init);
- the block's first norm output ``h`` becomes ``h * (1 + a scale) + a shift``, in fp32, before the block's
  own adaLN modulation;
- ``x += a * res_proj(f)`` before the block (res_proj width -> width, zero-init; the scripts LoRA-wrapped it
  so only its LoRA trains: ``lora_targets=...,res_proj``);
- ``a = s_layer * tanh(gate(t))``: ``s_layer`` a per-layer scalar starting at 1, ``gate`` an MLP
  width -> width -> 1 (SiLU; last linear normal std 0.02, bias 0) shared by the layers, on the timestep
  embedding ``t`` (with the augmentation level, before the style is added);
- the style vector passes ``style`` (MLP width -> width -> width) and is added to ``t`` before the adaLN
  projection. Its last linear starts at zero (the facts do not say; so that step 0 is the base model).

How it is attached, without copying diffusers' block code: forward hooks. A hook on the transformer's
timestep embedder (``adaln_single.emb``, after the augmentation level's) reads ``t`` and adds the style; a
pre-hook on each injected block adds the residual to its input; a hook on the block's ``norm1`` (PixArt's
affine-free LayerNorm, whose output the block then modulates with adaLN) applies the shift/scale. The
hooks read what the wrapper put in :attr:`Injection.state` for the current call, so activation
checkpointing's recomputation sees the same inputs. With no state (the guidance's unconditional branch
with ``guidance_drops=adapter``) the hooks do nothing: the base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """linear, SiLU, linear."""

    def __init__(self, width: int, out: int):
        super().__init__()
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(F.silu(self.first(x.to(self.first.weight.dtype))))


class InjectionLayer(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.modulation = nn.Linear(width, 2 * width)
        self.res_proj = nn.Linear(width, width)
        self.scale = nn.Parameter(torch.ones(()))  # s_layer
        for linear in (self.modulation, self.res_proj):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)


@dataclass
class InjectionState:
    """One call's inputs: the pyramid's features per injected layer, the style vector (N x width; None: no
    style) and, once the timestep embedder ran, the gate's input ``t``."""

    features: list[torch.Tensor]
    style: torch.Tensor | None
    t: torch.Tensor | None = None


class Injection(nn.Module):
    def __init__(self, width: int, layers: list[int]):
        super().__init__()
        self.layer_index = {block: i for i, block in enumerate(layers)}
        self.layers = nn.ModuleList(InjectionLayer(width) for _ in layers)
        self.gate = MLP(width, 1)
        nn.init.normal_(self.gate.second.weight, std=0.02)
        nn.init.zeros_(self.gate.second.bias)
        self.style = MLP(width, width)
        nn.init.zeros_(self.style.second.weight)
        nn.init.zeros_(self.style.second.bias)
        self.state: InjectionState | None = None

    def gate_value(self, i: int, t: torch.Tensor) -> torch.Tensor:
        """``a = s_layer * tanh(MLP(t))`` of injected layer ``i``: N x 1 x 1."""
        layer: Any = self.layers[i]
        return (layer.scale.float() * torch.tanh(self.gate(t).float()))[:, :, None]

    def _features(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.state
        assert state is not None and state.t is not None, "the timestep embedder runs before the blocks"
        return state.features[i], self.gate_value(i, state.t)

    def residual(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        f, a = self._features(i)
        proj: Any = self.layers[i]
        proj = proj.res_proj
        return hidden + (a * proj(f.to(hidden.dtype)).float()).to(hidden.dtype)

    def modulate(self, i: int, h: torch.Tensor) -> torch.Tensor:
        f, a = self._features(i)
        layer: Any = self.layers[i]
        f = F.layer_norm(f.float(), f.shape[-1:]).to(layer.modulation.weight.dtype)
        shift, scale = layer.modulation(f).float().chunk(2, dim=-1)
        return (h.float() * (1 + a * scale) + a * shift).to(h.dtype)

    def add_style(self, t: torch.Tensor) -> torch.Tensor:
        state = self.state
        if state is None:
            return t
        state.t = t
        if state.style is None:
            return t
        return t + self.style(state.style).to(t.dtype)


def attach_injection(transformer: Any, injection: Injection) -> None:
    """Hook ``injection`` into a diffusers PixArtTransformer2DModel (see the module's docstring)."""

    def after_embedder(module, args, output):
        return injection.add_style(output)

    transformer.adaln_single.emb.register_forward_hook(after_embedder)
    for block_index, i in injection.layer_index.items():
        block = transformer.transformer_blocks[block_index]
        block.register_forward_pre_hook(_before_block(injection, i), with_kwargs=True)
        block.norm1.register_forward_hook(_after_norm(injection, i))


def _before_block(injection: Injection, i: int):
    def before(module, args, kwargs):
        if injection.state is None:
            return None
        if args:
            return (injection.residual(i, args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": injection.residual(i, kwargs["hidden_states"])}

    return before


def _after_norm(injection: Injection, i: int):
    def after(module, args, output):
        return None if injection.state is None else injection.modulate(i, output)

    return after
