"""Which parameters of a pretrained generator train (``model ... train=``, ``train_add=``, ``train_remove=``)
and at which learning rate (``cond_lr_on=``).

Names are the generator's parameter names; a pattern (``fnmatch`` glob, ``*`` crosses dots) matches a name
either whole or without the leading ``base.`` of the pretrained transformer, so that diffusers' own names work
(``transformer_blocks.*.ff.*``) besides the SR parts' (``adapter.*``, ``aug_level.*``).

- ``lora``: the LoRA matrices only; ``lora+cond``: and the conditioning (the LR input layer when widened, the
  adapter, the augmentation embedding); ``lora+rest``: every parameter but the base weights LoRA wraps (the
  reference scripts' set: ``apply_lora`` froze only those); ``full``: everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from ..loading import LoadError

CONDITIONING = ("adapter.", "aug_level.")
INPUT_LAYER = "base.pos_embed.proj."
INJECTION = "injection."  # the pyramid adapter's injection into the blocks (trained at the base rate, as the scripts)
WRAPPED = ".base_layer."  # peft's name for the base layer a LoRA layer wraps


def patterns(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def matches(name: str, pattern: str) -> bool:
    return fnmatchcase(name, pattern) or (name.startswith("base.") and fnmatchcase(name[5:], pattern))


def is_conditioning(name: str, concat: bool) -> bool:
    if name.startswith(INJECTION):  # the pyramid's injection, but the base of a LoRA-wrapped res_proj
        return WRAPPED not in name
    return name.startswith(CONDITIONING) or (concat and name.startswith(INPUT_LAYER))


def trained_by_mode(name: str, mode: str, concat: bool) -> bool:
    """Whether ``name`` trains under ``train=mode`` (before train_add/train_remove)."""
    if mode == "full":
        return True
    if "lora_" in name:
        return True
    if mode == "lora+cond":
        return is_conditioning(name, concat)
    if mode == "lora+rest":
        return WRAPPED not in name
    return False


def _where(origins: Mapping[str, object] | None, key: str) -> str:
    pos = (origins or {}).get(key)
    return f"{pos}: " if pos is not None else ""


def matched(names: list[str], key: str, text: str, origins: Mapping[str, object] | None) -> set[str]:
    """The names the patterns of ``key`` match; a pattern that matches none is an error at the key."""
    found: set[str] = set()
    for pattern in patterns(text):
        hits = {n for n in names if matches(n, pattern)}
        if not hits:
            roots = sorted({n.removeprefix("base.").split(".")[0] for n in names})
            raise LoadError(
                f"{_where(origins, key)}model {key}: '{pattern}' matches no parameter of the generator; names "
                f"start with {', '.join(roots)} (see 'ditsr-plan show PLAN --params')"
            )
        found |= hits
    return found


def choose(
    names: Iterable[str], mode: str, concat: bool, add: str, remove: str, origins: Mapping[str, object] | None = None
) -> set[str]:
    """The names of the parameters that train."""
    names = list(names)
    chosen = {n for n in names if trained_by_mode(n, mode, concat)}
    chosen |= matched(names, "train_add", add, origins)
    chosen -= matched(names, "train_remove", remove, origins)
    return chosen


def at_cond_lr(
    names: Iterable[str], on: str, trained: set[str], origins: Mapping[str, object] | None = None
) -> set[str]:
    """The names of the parameters trained at ``cond_lr`` x lr: ``auto`` the conditioning, else patterns,
    each of which must match a trained parameter (one matching only frozen ones would do nothing)."""
    names = list(names)
    if on == "auto":
        return {n for n in names if name_is_auto_cond(n)}
    found = matched(names, "cond_lr_on", on, origins)
    for pattern in patterns(on):
        if not any(matches(n, pattern) for n in trained):
            raise LoadError(
                f"{_where(origins, 'cond_lr_on')}model cond_lr_on: '{pattern}' matches only frozen parameters: "
                "train them (train=, train_add=) or leave the pattern out"
            )
    return found


def name_is_auto_cond(name: str) -> bool:
    """``cond_lr_on=auto``: the adapter, the augmentation embedding and the input layer (as before the
    setting existed, widened or not)."""
    return name.startswith((*CONDITIONING, INPUT_LAYER))
