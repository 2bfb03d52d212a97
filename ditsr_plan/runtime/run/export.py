"""``ditsr-plan export RUN --merge OUT``: a trained run's generator as one diffusers transformer folder.

The base transformer (from the plan's ``model ... path=``) with the run's trained weights -- its EMA by
default -- the LoRA merged into the base weights, and the ``concat`` conditioning in its widened input
layer: ``PixArtTransformer2DModel.from_pretrained(OUT)`` (or DiT's) loads it, and called on
``cat([noisy, LR latent])`` (with the caption the run used) it gives the trained generator's prediction at
augmentation level 0 (validation). With ``cond=adapter``, the adapter is not a diffusers module: its
weights are written beside it (``sr_adapter.safetensors``) and ``sr_export.json`` says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from ditsr_plan.settings.schemas import CustomModel, DitModel, PixartModel

from ..analysis.status import read_graph
from ..train.device import place
from ..train.generators import fingerprint, latent_and_generator
from ..train.generators.lora import ADAPTER, lora_state_dict
from .checkpoint import CheckpointError
from .folder import RunError
from .resume import check_base


def final_folder(run_dir: Path, ema: bool) -> tuple[Path, str | None]:
    """The run's final trained generator (``final/generator_ema``, or ``final/generator``) and a note when
    the EMA was asked for but the finished run trained without one."""
    final = run_dir / "final"
    if ema and (final / "generator_ema").is_dir():
        return final / "generator_ema", None
    if not (final / "generator").is_dir() or not (run_dir / "summary.json").is_file():
        raise RunError(
            f"{run_dir} has not finished (no final/generator{'_ema' if ema else ''} and summary.json): only a "
            "finished run can be exported; resume it (ditsr-plan run PLAN --out RUN --resume) to finish it"
        )
    return final / "generator", ("the run trained without EMA: exporting its trained weights" if ema else None)


def _tensors(path: Path) -> dict:
    """A final safetensors file's tensors, each finite; anything else is refused."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run's final generator is incomplete")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
        raise CheckpointError(f"{path} is unreadable ({str(exc).splitlines()[0][:160]})") from None
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all()))
    if bad:
        raise CheckpointError(f"{path} holds NaN or infinite values ({', '.join(bad[:3])}): nothing to export")
    return tensors


def _check_fit(path: Path, tensors: dict, expected: dict) -> None:
    """``tensors`` (a file's) are exactly ``expected``'s names and shapes: none missing, none extra."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    shapes = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or extra or shapes:
        found = (("missing", missing), ("extra", extra), ("of another shape", shapes))
        parts = [f"{label} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}" for label, names in found if names]
        raise CheckpointError(
            f"{path} does not fit the run's generator ({'; '.join(parts)}): it is damaged or of another run"
        )


def _load_final(model, final: Path) -> None:
    """The final trained tensors into ``model``, strictly: the LoRA (peft's format) or the whole transformer,
    then the conditioning; a file with missing, extra, misshapen or non-finite tensors is refused."""
    if model.lora_config is not None and model.train_mode != "full":
        from peft import set_peft_model_state_dict

        path = final / "adapter_model.safetensors"
        adapter = _tensors(path)
        _check_fit(path, adapter, lora_state_dict(model.base))
        set_peft_model_state_dict(model.base, adapter, adapter_name=ADAPTER)
    else:
        files = sorted((final / "transformer").glob("*.safetensors"))
        path = final / "transformer" / (files[0].name if len(files) == 1 else "*.safetensors")
        whole = {k: v for f in files or [path] for k, v in _tensors(f).items()}
        _check_fit(path, whole, model.base.state_dict())
        model.base.load_state_dict(whole)
    path = final / "sr_conditioning.safetensors"
    conditioning = _tensors(path)
    # everything trained but the base's LoRA (the pyramid injection's res_proj LoRA is conditioning)
    expected = {k: v for k, v in model.trainable_state_dict().items() if not (k.startswith("base.") and "lora_" in k)}
    _check_fit(path, conditioning, expected)
    model.load_state_dict(conditioning, strict=False)


def _recorded_base(final: Path) -> dict | None:
    try:
        meta = json.loads((final / "generator.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{final / 'generator.json'} is unreadable ({exc}): it names the run's base") from None
    return meta.get("base") if isinstance(meta, dict) else None


def _refuse_nothing_to_merge(graph, final: Path) -> None:
    if isinstance(graph.block("model"), CustomModel):
        raise RunError(
            f"model custom: no pretrained base to merge into; {final}/model.safetensors is the trained state dict "
            "(load it into what your factory builds)"
        )
    if isinstance(graph.block("model"), DitModel) and not graph.block("model").path:
        raise RunError(
            f"model dit from scratch: no pretrained base to merge into; {final} already is a diffusers folder "
            "(DiTTransformer2DModel.from_pretrained loads it)"
        )


def rebuild_generator(run_dir: Path, ema: bool = True, device: str = "cpu", note=lambda line: None):
    """The run's generator with its final trained weights (``final/generator_ema`` or ``final/generator``),
    on the base the run trained on (another base is refused)."""
    graph = read_graph(run_dir)
    final, why = final_folder(run_dir, ema)
    if why:
        note(why)
    _refuse_nothing_to_merge(graph, final)  # before a custom factory's code would run for nothing
    _, model = latent_and_generator(graph, place(device, "fp32").device)
    if not hasattr(model, "merged"):
        raise RunError(f"model {graph.blocks['model'].kind}: no pretrained base to merge into; {final} is the model")
    model_settings = graph.block("model")
    where = model_settings.path if isinstance(model_settings, DitModel | PixartModel) else None
    check_base(f"{final}", _recorded_base(final), fingerprint(model), "the run's plan.json now loads", where)
    _load_final(model, final)
    return model, graph


def export_merged(run_dir: Path, out: Path, ema: bool = True, note=lambda line: None) -> Path:
    """``out``: the run's final generator as one diffusers folder (LoRA merged; ``sr_export.json`` says what)."""
    from safetensors.torch import save_file

    notes: list[str] = []

    def noted(line: str) -> None:
        notes.append(line)
        note(line)

    model, _ = rebuild_generator(run_dir, ema, note=noted)
    if getattr(model, "injection", None) is not None:
        raise RunError(
            "model pixart adapter=pyramid: its injection hooks into the transformer's blocks and is no diffusers "
            "module, so there is no merged folder to write yet; use the run itself (ditsr-plan upscale RUN ...)"
        )
    merged = model.merged()
    merged.save_pretrained(out, safe_serialization=True)
    info = {
        "from": str(run_dir),
        "ema": ema and not notes,
        "cond": model.settings.cond,
        "input": "cat([noisy, LR latent])" if model.concat else "noisy",
    }
    if model.adapter is not None:
        save_file(
            {k: v.contiguous() for k, v in model.adapter.state_dict().items()}, str(out / "sr_adapter.safetensors")
        )
        info["adapter"] = "sr_adapter.safetensors (LRAdapter of ditsr_plan.runtime.train.generators.conditioning)"
    (out / "sr_export.json").write_text(json.dumps(info, indent=1))
    return out
