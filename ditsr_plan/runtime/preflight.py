"""What a run needs, checked in seconds before anything is built (``ditsr-plan check``, and ``run`` before it
imports torch): every folder and file the plan names, the model and VAE folders' configurations (class,
channels, latent size, weights present), the LPIPS trunk, the device and the precision.

Every problem is a :class:`~ditsr_plan.diagnostics.Diagnostic` at the plan position of the setting (the
``--set`` that gave it, or the block or term when the setting is a default) with the ``--set`` that fixes
it, so that all of them are reported together. Reads configuration files only: imports no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ditsr_plan.compiler.graph import Block, ScheduleGraph
from ditsr_plan.diagnostics import VALUE, Diagnostic
from ditsr_plan.settings import schemas
from ditsr_plan.terminal import shown

from .train.loading import LoadError, check_class, model_folder

MODEL_CLASSES = {"pixart": "PixArtTransformer2DModel", "dit": "DiTTransformer2DModel"}
WEIGHTS_SUFFIXES = (".safetensors", ".bin")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}  # data.py's, without torch
MOST_FILES = 200_000  # a data root is walked no further than this many files (then said "at least")
# torchvision's file names of the LPIPS trunks (the start of the name; the hash suffix follows)
LPIPS_TRUNKS = {"vgg": "vgg16-", "alex": "alexnet-", "squeeze": "squeezenet1_1-"}


@dataclass
class Preflight:
    problems: list[Diagnostic] = field(default_factory=list)  # errors, and warnings (severity "warning")
    found: list[str] = field(default_factory=list)  # what is there, one line per thing checked
    latent_channels: int | None = None  # the VAE's, when it was read
    latent_factor: int | None = None

    def problem(self, block: Block | None, key: str, message: str, hint: str) -> None:
        pos = None
        if block is not None:
            pos = block.value_origins.get(key) or block.origin
        self.problems.append(Diagnostic(VALUE, message, pos, hint))


def preflight(graph: ScheduleGraph) -> Preflight:
    """Every problem of ``graph``'s paths, models, device and precision at once, and what was found."""
    result = Preflight()
    _check_device(graph, result)
    _check_latent(graph, result)
    _check_model(graph, result)
    _check_data(graph, result)
    _check_lpips(graph, result)
    _check_eval(graph, result)
    return result


def cuda_driver_present() -> bool:
    """A CUDA driver on this machine (without importing torch): the device files or the driver's /proc entry,
    and CUDA_VISIBLE_DEVICES not emptied."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def _check_device(graph: ScheduleGraph, result: Preflight) -> None:
    block, run = graph.blocks["run"], graph.block("run")
    cuda = cuda_driver_present()
    if run.device.startswith("cuda") and not cuda:
        result.problem(
            block, "device", f"run device={run.device}, but there is no CUDA device here", "--set run.device=auto"
        )
        return
    device = "cuda" if run.device.startswith("cuda") or (run.device == "auto" and cuda) else "cpu"
    if run.precision == "bf16" and device == "cpu":
        result.problem(
            block,
            "precision",
            "run precision=bf16 is for CUDA; this run would be on the CPU, which trains in fp32",
            "--set run.precision=auto (bf16 on CUDA, fp32 on the CPU)",
        )
        return
    precision = run.precision if run.precision != "auto" else ("bf16" if device == "cuda" else "fp32")
    result.found.append(f"device: {device} ({precision}{'' if cuda else '; no CUDA driver found'})")


def _weights(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHTS_SUFFIXES))


def _weights_text(folder: Path) -> str:
    """``weights diffusion_pytorch_model.safetensors (2.4 MiB)``: the files and their size on disk, the
    least memory the weights take once loaded (``show --params`` counts what training adds)."""
    names = _weights(folder)
    size = sum((folder / n).stat().st_size for n in names) / 2**20
    return f"weights {', '.join(names)} ({size:.1f} MiB)"


def _read_folder(
    block: Block, path: str, subfolder: str | None, what: str, expected: str, default: str, result: Preflight
) -> tuple[Path, str, dict] | None:
    """(folder, which it is, config) of a diffusers model folder, or None with the problem noted."""
    key = "path"
    hint = f"--set {block.name}.{key}=DIR (a local {expected} folder, or the pipeline's folder that holds it)"
    try:
        inner, which = model_folder(path, subfolder, what, default)
        config = check_class(inner, expected, what, path)
    except LoadError as exc:
        result.problem(block, key, str(exc), hint)
        return None
    if not _weights(inner):
        result.problem(block, key, f"{what}={path}: {inner} holds a config.json but no weights file", hint)
        return None
    return inner, which, config


def _check_latent(graph: ScheduleGraph, result: Preflight) -> None:
    block = graph.blocks["latent"]
    settings = graph.block("latent")
    if isinstance(settings, schemas.PixelUnshuffleLatent):
        factor = settings.factor
        result.latent_channels, result.latent_factor = 3 * factor * factor, factor
        return
    read = _read_folder(block, settings.path, settings.subfolder, "latent vae path", "AutoencoderKL", "vae", result)
    if read is None:
        return
    inner, which, config = read
    widths = config.get("block_out_channels") or [0]
    channels, factor = config.get("latent_channels"), 2 ** (len(widths) - 1)
    result.latent_channels = channels if isinstance(channels, int) else None
    result.latent_factor = factor
    result.found.append(
        f"VAE: {shown(str(inner))} ({which}): AutoencoderKL, {channels} latent channels, x{factor} downsampling, "
        + _weights_text(inner)
    )


def _check_model(graph: ScheduleGraph, result: Preflight) -> None:
    block = graph.blocks["model"]
    settings = graph.block("model")
    if isinstance(settings, schemas.CustomModel):
        if settings.file and not os.path.isfile(settings.file):
            result.problem(
                block, "file", f"model custom file={settings.file}: no such file", "--set model.file=FILE.py"
            )
        return
    path = settings.path
    if path is None:
        result.found.append("model dit: trained from scratch (no folder to read)")
        return
    kind = block.kind or "dit"
    what = f"model {kind} path"
    if kind == "pixart" and Path(path).suffix == ".pth":
        _check_original(block, path, result)
        return
    read = _read_folder(block, path, settings.subfolder, what, MODEL_CLASSES[kind], "transformer", result)
    if read is None:
        return
    inner, which, config = read
    channels, size = config.get("in_channels"), config.get("sample_size")
    if result.latent_channels is not None and channels != result.latent_channels:
        result.problem(
            block,
            "path",
            f"model {kind} path={path}: the model takes {channels} latent channels, the plan's latent has "
            f"{result.latent_channels}",
            "use the latent the checkpoint was trained with (latent vae path=... for an SD-VAE model)",
        )
    pixels = f" ({size * result.latent_factor} px)" if isinstance(size, int) and result.latent_factor else ""
    result.found.append(
        f"model {kind}: {shown(str(inner))} ({which}): {MODEL_CLASSES[kind]}, {channels} latent channels, "
        f"latent {size} x {size}{pixels}, {config.get('num_layers')} blocks, " + _weights_text(inner)
    )
    caption = settings.caption if isinstance(settings, schemas.PixartModel) else "null"
    if caption != "null" and not os.path.isfile(caption):
        result.problem(block, "caption", f"model {kind} caption={caption}: no such file", "--set model.caption=null")


def _check_original(block: Block, path: str, result: Preflight) -> None:
    """``model pixart path=FILE.pth``: the original checkpoint is there (it is read, without code, by the run)."""
    file = Path(os.path.expanduser(path))
    hint = "--set model.path=FILE.pth (PixArt-alpha's original checkpoint) or DIR (a diffusers PixArt folder)"
    if not file.exists():
        result.problem(block, "path", f"model pixart path={path}: no such file", hint)
    elif not file.is_file():
        result.problem(block, "path", f"model pixart path={path}: not a regular file", hint)
    else:
        size = file.stat().st_size / 2**20
        result.found.append(f"model pixart: {shown(str(file))} (an original PixArt-alpha checkpoint, {size:.1f} MiB)")


def count_images(root: Path) -> tuple[int, bool]:
    """(image files under ``root``, whether the walk stopped at ``MOST_FILES`` files). Regular files only: a
    FIFO, a device or a dangling link named like an image is not one."""
    seen = count = 0
    for folder, _, names in os.walk(root):
        for name in names:
            seen += 1
            if seen > MOST_FILES:
                return count, True
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(os.path.join(folder, name)):
                count += 1
    return count, False


def _check_data(graph: ScheduleGraph, result: Preflight) -> None:
    block = graph.blocks["data"]
    settings = graph.block("data")
    folders = {"root": settings.root} if isinstance(settings, schemas.FolderData) else {}
    if isinstance(settings, schemas.PairedData):
        folders = {"hr": settings.hr, "lr": settings.lr}
    for key, path in folders.items():
        hint = f"--set data.{key}=DIR (a folder of {'LR' if key == 'lr' else 'HR'} images)"
        if not os.path.isdir(path):
            what = "not a folder" if os.path.exists(path) else "no such folder"
            result.problem(block, key, f"data {block.kind} {key}={path}: {what}", hint)
            continue
        count, stopped = count_images(Path(path))
        if not count:
            result.problem(block, key, f"data {block.kind} {key}={path}: no images in it", hint)
            continue
        counted = f"at least {count} image files (the first {MOST_FILES} files)" if stopped else f"{count} image files"
        result.found.append(f"data {key}: {shown(path)}: {counted} (crop {settings.crop})")


def torch_hub_checkpoints() -> Path:
    """Where torchvision keeps its downloaded weights (torch.hub's rule, without importing torch)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def cached_trunk(net: str) -> Path | None:
    folder = torch_hub_checkpoints()
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.name.startswith(LPIPS_TRUNKS[net])), None)


def _check_lpips(graph: ScheduleGraph, result: Preflight) -> None:
    for name, term in graph.terms.items():
        settings = term.settings
        if not isinstance(settings, schemas.Lpips) or settings.backbone != "pretrained":
            continue
        net = settings.net
        trunk = cached_trunk(net)
        if trunk is not None:
            result.found.append(f"LPIPS ({name}): the pretrained {net} trunk {shown(str(trunk))}")
            continue
        result.problems.append(
            Diagnostic(
                "warning:",
                f"term '{name}': the pretrained {net} trunk of LPIPS is not in {torch_hub_checkpoints()}: the run "
                "will ask torchvision to download it, which fails offline",
                term.setting_origins.get("backbone") or term.origin,
                f"put torchvision's {LPIPS_TRUNKS[net]}*.pth file there, or --set {name}.backbone=random "
                "(a random trunk: offline smoke tests)",
                severity="warning",
            )
        )


def _check_eval(graph: ScheduleGraph, result: Preflight) -> None:
    block = graph.blocks.get("eval")
    settings = graph.block("eval")
    if block is None or settings is None:
        return
    if settings.pack and not os.path.isdir(settings.pack):
        result.problem(block, "pack", f"eval pack={settings.pack}: no such folder", "--set eval.pack=DIR")
    if settings.images != "builtin":
        for item in settings.images.split(","):
            role, _, path = item.partition("=")
            if path and not os.path.exists(path):
                result.problem(
                    block, "images", f"eval images: {role}={path}: no such file or folder", "--set eval.images=..."
                )


def positioned_sources(graph: ScheduleGraph, problems: list[Diagnostic]) -> dict[str, str]:
    """The texts the problems' positions point into (the plan files, ``--set``), for their excerpts."""
    sources = dict(graph.sources)
    for d in problems:
        if d.pos and d.pos.file not in sources and os.path.isfile(d.pos.file):
            sources[d.pos.file] = Path(d.pos.file).read_text(encoding="utf-8", errors="replace")
    return sources
