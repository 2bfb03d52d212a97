"""LoRA on a diffusers transformer, with peft (``inject_adapter_in_model``): no hand-written layers.

The adapters are saved in peft's own format (``adapter_config.json`` + ``adapter_model.safetensors``) and
merged into the base weights for export with peft's own ``merge`` of each LoRA layer, the layers then
replaced by their merged base layers.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..loading import LoadError

ADAPTER = "default"


def linear_names(model: nn.Module) -> list[str]:
    """The names of the model's linear layers (what LoRA targets are matched against)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def check_targets(model: nn.Module, targets: list[str]) -> None:
    """Every target names at least one linear layer (peft matches a target as a suffix of the module's
    name); otherwise an error listing the names there are."""
    names = linear_names(model)
    missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        leaves = sorted({n.split(".", 2)[-1] if n.count(".") >= 2 else n for n in names})
        shown = ", ".join(leaves[:30]) + (f", ... ({len(leaves)} in all)" if len(leaves) > 30 else "")
        raise LoadError(
            f"model lora_targets: {', '.join(missing)} match no linear layer of the model; its linear layers "
            f"are (by their last names): {shown}"
        )


def add_lora(model, rank: int, alpha: float, dropout: float, targets: list[str]):
    """Inject LoRA adapters of ``rank`` into ``targets`` (A Kaiming-uniform, B zeros: the model is unchanged
    at step 0); returns the peft ``LoraConfig``."""
    from peft import LoraConfig, inject_adapter_in_model

    check_targets(model, targets)
    # peft annotates lora_alpha as int; any number works (the scale is alpha / rank)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]
        lora_dropout=dropout,
        target_modules=targets,
        init_lora_weights=True,
    )
    inject_adapter_in_model(config, model, ADAPTER)
    return config


def lora_state_dict(model) -> dict:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=ADAPTER)


def save_lora(model, config, folder: Path) -> None:
    """``adapter_config.json`` and ``adapter_model.safetensors``: peft's format."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    state = {k: v.detach().contiguous().cpu() for k, v in lora_state_dict(model).items()}
    save_file(state, str(folder / "adapter_model.safetensors"))


def load_lora(model, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")), adapter_name=ADAPTER)


def merge_lora(model) -> None:
    """Fold the adapters into the base weights and remove them: a plain diffusers model again."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge(adapter_names=[ADAPTER])
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
