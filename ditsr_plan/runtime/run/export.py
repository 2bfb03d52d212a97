"""``ditsr-plan export RUN --merge OUT``: a finished run's generator as a complete pipeline folder.

The base transformer (from the plan's ``model ... path=``) with the run's trained weights -- its EMA by
default -- the LoRA merged into the base weights, and the ``concat`` conditioning in its widened input
layer, in ``OUT/transformer`` (``PixArtTransformer2DModel.from_pretrained(OUT / "transformer")``, or DiT's,
loads it; called on ``cat([noisy, LR latent])`` with the run's caption it gives the trained generator's
prediction at augmentation level 0, validation's); a DiT trained from scratch (the demo's) likewise. Beside
it: the LR adapter's weights and the caption (``sr_conditioning.safetensors``), the VAE, the DDIM scheduler
and ``sr_pipeline.json`` -- everything ``DiTSRPipeline.from_pretrained(OUT)`` and ``ditsr-plan upscale OUT``
need (``runtime/upscale/``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ditsr_plan.settings.schemas import CustomModel, DitModel, Eval, PixartModel

from ..analysis.status import read_graph
from ..train.device import place
from ..train.generators import fingerprint, latent_and_generator
from ..train.generators.dit import LR_CONTEXT_FILE
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
            f"model custom: no diffusers transformer to export; {final}/model.safetensors is the trained state dict "
            "(load it into what your factory builds)"
        )


def _from_scratch(graph, final: Path):
    """The demo's kind of generator -- a DiT trained from scratch -- with its final weights (``final`` is the
    DiT's diffusers folder, with the ``lr_context`` convolution beside it; at augmentation level 0 they are
    the whole generator)."""
    _, built = latent_and_generator(graph, place("cpu", "fp32").device)
    model: Any = built
    dit = model.dit
    path = final / "diffusion_pytorch_model.safetensors"
    tensors = _tensors(path)
    _check_fit(path, tensors, dit.state_dict())
    dit.load_state_dict(tensors)
    if model.lr_context is not None:  # model dit lr_context=N: its convolution is saved beside the DiT
        conv = final / LR_CONTEXT_FILE
        conv_tensors = _tensors(conv)
        _check_fit(conv, conv_tensors, model.lr_context.state_dict())
        model.lr_context.load_state_dict(conv_tensors)
    return model


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
    """``out``: the run's final generator as a :class:`DiTSRPipeline` folder (LoRA merged, the conditioning,
    the latent, the scheduler and the sampling settings; ``sr_pipeline.json`` says what). Written beside
    ``out`` and renamed into place: a failed export leaves no half-written folder."""
    from ..train.latent import build_latent
    from ..upscale.pipeline import DiTSRPipeline

    notes: list[str] = []

    def noted(line: str) -> None:
        notes.append(line)
        note(line)

    graph = read_graph(run_dir)
    settings = graph.block("model")
    if isinstance(settings, DitModel) and not settings.path:
        final, why = final_folder(run_dir, ema)
        if why:
            noted(why)
        model = _from_scratch(graph, final)
    else:
        model, _ = rebuild_generator(run_dir, ema, note=noted)
        if getattr(model, "injection", None) is not None:
            raise RunError(
                "model pixart adapter=pyramid: its injection hooks into the transformer's blocks and is no "
                "diffusers module, so there is no pipeline folder to write yet; use the run itself "
                "(ditsr-plan upscale RUN ...)"
            )
    data = graph.block("data")
    source = {
        "run": str(run_dir),
        "final": "generator_ema" if ema and not notes else "generator",
        "ema": ema and not notes,
    }
    latent, sampling = build_latent(graph.block("latent")), graph.block("eval") or Eval()
    pipe = DiTSRPipeline(model, latent, graph.block("diffusion"), sampling, data.scale, data.crop, source)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    try:
        pipe.save_pretrained(tmp)
        if out.is_dir():
            out.rmdir()  # empty: the command line refuses a folder that holds anything
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
