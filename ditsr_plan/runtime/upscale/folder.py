"""The pipeline's folder and its other sources: runs and checkpoints.

A folder is read as hostile input: ``sr_pipeline.json`` is parsed strictly (no NaN, at most 1 MB) and
validated; the transformer's ``config.json`` is bounded before anything is built from it; no file read may be
a symbolic link; every weight must be finite. Writing refuses a folder that holds anything, and a link.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ditsr_plan.settings.schemas import Diffusion, Eval
from ditsr_plan.terminal import shown

from ..errors import RunFailure
from ..train.latent import PixelUnshuffleLatent, VaeLatent
from .denoiser import ExportedDenoiser

PIPELINE_FILE = "sr_pipeline.json"
FORMAT = 1
CONDITIONING_FILE = "sr_conditioning.safetensors"
# every eval setting that decides how an image is sampled: an export must sample as the run's evals did
SAMPLING_KEYS = (
    "steps",
    "lq_init",
    "cfg",
    "seed",
    "tile",
    "overlap",
    "color_fix",
    "spacing",
    "start_noise",
    "guidance_drops",
)


class PipelineError(RunFailure):
    """A pipeline folder that cannot be loaded or written."""


MAX_JSON = 1 << 20
CONFIG_BOUNDS = {  # what a transformer config.json may say before anything is built from it
    "num_layers": 512,
    "num_attention_heads": 1024,
    "attention_head_dim": 4096,
    "in_channels": 4096,
    "out_channels": 4096,
    "sample_size": 16384,
    "patch_size": 64,
    "cross_attention_dim": 65536,
    "caption_channels": 65536,
    "num_embeds_ada_norm": 1_000_000,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AdapterSpec(_Strict):
    width: int = Field(ge=1, le=8192)
    patch: int = Field(ge=1, le=64)
    blocks: int = Field(ge=1, le=512)
    inner: int = Field(ge=1, le=65536)


class TransformerSpec(_Strict):
    kind: Literal["pixart", "dit"]
    concat: bool
    channels: int = Field(ge=1, le=4096)
    class_label: int | None = Field(None, ge=0, le=1_000_000)
    resolution: list[float] | None = Field(None, min_length=2, max_length=2)
    adapter: AdapterSpec | None = None
    lr_context: int | None = Field(None, ge=1, le=4096)


class LatentSpec(_Strict):
    kind: Literal["pixel_unshuffle", "vae"]
    factor: int | None = Field(None, ge=1, le=64)
    scaling: float | None = Field(None, gt=0)


class PipelineSpec(_Strict):
    format: Literal[1]
    class_: Literal["DiTSRPipeline"] = Field(alias="class")
    transformer: TransformerSpec
    latent: LatentSpec
    diffusion: dict
    sampling: dict
    scale: int = Field(ge=1, le=16)
    crop: int = Field(ge=1, le=65536)
    source: dict = Field(default_factory=dict)


def _regular(path: Path, folder: Path) -> Path:
    """``path`` (inside ``folder``) if it is a regular file or folder reached without a symbolic link."""
    for part in [path, *path.parents]:
        if part == folder.parent:
            break
        if part.is_symlink():
            raise PipelineError(f"{shown(folder)}: {shown(part)} is a symbolic link; a pipeline folder holds none")
    return path


def _no_constant(name: str) -> None:
    raise ValueError(f"bare {name}")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise PipelineError(f"{shown(path)} is missing: {what}")
    if path.stat().st_size > MAX_JSON:
        raise PipelineError(f"{shown(path)} is larger than {MAX_JSON} bytes: not {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PipelineError(f"{shown(path)} is not valid JSON ({str(exc)[:120]}): {what}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{shown(path)} is not a JSON object: {what}")
    return data


def _validated(model, data: dict, path: Path):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PipelineError(f"{shown(path)}: {where}: {first['msg']} (a folder 'ditsr-plan export' wrote?)") from None


def _bounded_config(path: Path) -> None:
    config = _read_json(path, "the transformer's diffusers config")
    for key, most in CONFIG_BOUNDS.items():
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most):
            raise PipelineError(f"{shown(path)}: {key}={str(value)[:40]} is not a whole number in [0, {most}]")


def _finite(model: torch.nn.Module, where: Path) -> None:
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        raise PipelineError(f"{shown(where)} holds NaN or infinite weights ({', '.join(bad[:3])})")


def load_folder(folder: Path) -> tuple:
    """The parts of a :class:`DiTSRPipeline` (its constructor's arguments) from ``folder``."""

    from ..train.generators.pretrained import transformer_class
    from ..train.loading import load_pretrained

    if not folder.is_dir():
        raise PipelineError(f"{shown(folder)} is not a folder (an exported pipeline: 'ditsr-plan export RUN --merge')")
    folder = folder.resolve()
    path = _regular(folder / PIPELINE_FILE, folder)
    spec = _validated(PipelineSpec, _read_json(path, "the pipeline's description"), path)
    sampling = _validated(Eval, spec.sampling, path)
    diffusion = _validated(Diffusion, spec.diffusion, path)
    t = spec.transformer
    _bounded_config(_regular(folder / "transformer" / "config.json", folder))
    for weights in (folder / "transformer").glob("*"):
        _regular(weights, folder)
    transformer = load_pretrained(
        transformer_class(t.kind), str(folder / "transformer"), None, "the pipeline's transformer"
    )
    _finite(transformer, folder / "transformer")
    latent: VaeLatent | PixelUnshuffleLatent
    if spec.latent.kind == "vae":
        _bounded_config(_regular(folder / "vae" / "config.json", folder))
        for weights in (folder / "vae").glob("*"):
            _regular(weights, folder)
        latent = VaeLatent(str(folder / "vae"), None, spec.latent.scaling)
    else:
        latent = PixelUnshuffleLatent(spec.latent.factor or 1)
    _check_description(t, transformer, latent.channels, path)  # before anything is built from the description
    extra = _conditioning(folder, t)
    try:
        denoiser = ExportedDenoiser(t.model_dump(), transformer, extra)
    except (RuntimeError, KeyError) as exc:
        raise PipelineError(
            f"{shown(folder)}: the conditioning does not fit the transformer ({str(exc)[:160]})"
        ) from None
    _finite(denoiser, folder / CONDITIONING_FILE)
    return denoiser, latent, diffusion, sampling, spec.scale, spec.crop, spec.source


def _conditioning(folder: Path, t: TransformerSpec) -> dict:
    """The tensors of ``sr_conditioning.safetensors``: PixArt's ``caption``, the adapter's ``adapter.*``, a
    DiT's ``lr_context.*`` -- each floating point, nothing else, and there when the description needs it."""
    from safetensors.torch import load_file

    file = folder / CONDITIONING_FILE
    needs = [what for what, needed in (("the caption", t.kind == "pixart"), ("the LR adapter's weights", t.adapter),
                                       ("the lr_context convolution", t.lr_context)) if needed]  # fmt: skip
    if not file.exists() and not file.is_symlink():
        if needs:
            raise PipelineError(f"{shown(file)} is missing: it holds {' and '.join(needs)} the description names")
        return {}
    _regular(file, folder)
    try:
        extra = load_file(str(file))
    except Exception as exc:  # safetensors raises its own error type
        raise PipelineError(f"{shown(file)} is unreadable ({str(exc)[:120]})") from None
    unknown = sorted(k for k in extra if k != "caption" and not k.startswith(("adapter.", "lr_context.")))
    if unknown:
        raise PipelineError(f"{shown(file)} holds tensors no pipeline writes: {', '.join(unknown[:3])}")
    integral = sorted(k for k, v in extra.items() if not v.is_floating_point())
    if integral:
        raise PipelineError(f"{shown(file)}: {', '.join(integral[:3])} should hold floating-point numbers")
    if t.kind == "pixart" and "caption" not in extra:
        raise PipelineError(f"{shown(file)} lacks the caption a PixArt transformer is called with")
    return extra


def _check_description(t: TransformerSpec, transformer, latent_channels: int, path: Path) -> None:
    """What ``sr_pipeline.json`` says about the transformer's input agrees with the transformer and the latent:
    found here, in words, rather than as a shape error in the middle of sampling."""
    config = transformer.config
    expected = t.channels * (2 if t.concat else 1) + (t.lr_context or 0)
    problems = []
    if t.channels != latent_channels:
        problems.append(f"transformer.channels={t.channels} but the latent has {latent_channels} channels")
    if int(config.in_channels) != expected:
        parts = f"channels {t.channels}" + (" x 2 (concat)" if t.concat else "")
        parts += f" + lr_context {t.lr_context}" if t.lr_context else ""
        problems.append(
            f"the transformer takes {config.in_channels} input channels, the description gives it {expected} ({parts})"
        )
    predicted = int(getattr(transformer, "out_channels", None) or config.out_channels or config.in_channels)
    if predicted < t.channels:
        problems.append(f"the transformer predicts {predicted} channels, fewer than {t.channels}")
    if t.kind == "dit" and t.class_label is not None:
        table = transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings
        if t.class_label >= table:
            problems.append(f"class_label={t.class_label} is not one of the transformer's {table} classes")
    if problems:
        raise PipelineError(f"{shown(path)} does not describe this folder: {'; '.join(problems)}")


def load_run(target: Path, ema: bool, note) -> tuple:
    """The parts of a :class:`DiTSRPipeline` from a run folder (its newest complete checkpoint) or a
    checkpoint folder, as ``evaluate`` loads it."""
    from ditsr_plan.settings.schemas import DitModel, PixartModel

    from ..analysis.status import read_graph
    from ..run.evaluate import find_checkpoint, load_weights
    from ..run.resume import check_base
    from ..train.generators import fingerprint, latent_and_generator

    ckpt, run_dir = find_checkpoint(target, report=note)
    graph = read_graph(run_dir)
    latent, model = latent_and_generator(graph, torch.device("cpu"))
    settings = graph.block("model")
    path = settings.path if isinstance(settings, DitModel | PixartModel) else None
    base = ckpt.state()["trainer"].get("base")
    check_base(f"checkpoint {ckpt.path}", base, fingerprint(model), "the run's plan.json now loads", path)
    used_ema = load_weights(model, ckpt, ema)
    if ema and not used_ema:
        note(f"checkpoint {ckpt.path} has no EMA: using its trained weights")
    data = graph.block("data")
    source = {"run": str(run_dir), "checkpoint": str(ckpt.path), "step": ckpt.step, "ema": used_ema}
    sampling = graph.block("eval") or Eval()
    return model, latent, graph.block("diffusion"), sampling, data.scale, data.crop, source


def save_folder(pipe, folder: Path) -> Path:
    """``pipe`` as a self-describing folder (see :mod:`.pipeline`)."""
    from safetensors.torch import save_file

    from ..train.diffusion import make_scheduler

    if folder.is_symlink() or (folder.exists() and (not folder.is_dir() or any(folder.iterdir()))):
        raise PipelineError(f"{shown(folder)} exists and is not an empty folder: name a new one")
    spec, transformer, extra = pipe.parts()
    folder.mkdir(parents=True, exist_ok=True)
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    if extra:
        save_file({k: v.contiguous() for k, v in extra.items()}, str(folder / CONDITIONING_FILE))
    if isinstance(pipe.latent, VaeLatent):
        pipe.latent.vae.save_pretrained(folder / "vae", safe_serialization=True)
    make_scheduler("ddim", pipe.diffusion).save_pretrained(folder / "scheduler")
    (folder / PIPELINE_FILE).write_text(pipeline_json(pipe, spec, latent_json(pipe.latent)) + "\n", encoding="utf-8")
    return folder


def pipeline_json(pipe, spec: dict, latent: dict) -> str:
    """``sr_pipeline.json`` of a DiTSRPipeline."""
    return json.dumps(
        {
            "format": FORMAT,
            "class": "DiTSRPipeline",
            "transformer": spec,
            "latent": latent,
            "diffusion": pipe.diffusion.model_dump(mode="json"),
            "sampling": {k: v for k, v in pipe.sampling.model_dump(mode="json").items() if k in SAMPLING_KEYS},
            "scale": pipe.scale,
            "crop": pipe.crop,
            "source": pipe.source,
        },
        indent=1,
    )


def latent_json(latent) -> dict:
    if isinstance(latent, VaeLatent):
        return {"kind": "vae", "scaling": latent.scaling}
    assert isinstance(latent, PixelUnshuffleLatent)
    return {"kind": "pixel_unshuffle", "factor": latent.factor}
