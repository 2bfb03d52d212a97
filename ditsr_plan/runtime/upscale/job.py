"""What ``ditsr-plan upscale MODEL INPUT... -o OUT`` does with files: which model, which images, which
outputs, and the loop with its progress.

Inputs are files and folders (searched recursively for the image types ``pack make`` reads; symbolic links
inside folders are not followed); an image in a folder keeps its sub-folder under OUT. OUT may lie inside an
input folder: what is under OUT is never read as input. An output that exists is kept unless ``overwrite``;
two inputs that would write one output are named. An image that cannot be read (or is too large) is named
and skipped: the job goes on, and says so at the end.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ditsr_plan.terminal import shown

from ..errors import RunFailure
from ..train.data import IMAGE_SUFFIXES, MAX_PIXELS, ImageError
from .folder import PIPELINE_FILE
from .images import open_image, save_atomic
from .pipeline import DiTSRPipeline


class UpscaleError(RunFailure):
    """A model, an input or an output the job cannot use at all."""


@dataclass
class Work:
    """One image to upscale: its file and where its SR goes."""

    source: Path
    target: Path


@dataclass
class Outcome:
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # outputs that existed (no --overwrite)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, why)


def load_model(model: Path, ema: bool = True, note=lambda line: None) -> DiTSRPipeline:
    """The pipeline of ``model``: an exported folder (``sr_pipeline.json``), a run folder or a checkpoint."""
    if (model / PIPELINE_FILE).is_file():
        return DiTSRPipeline.from_pretrained(model)
    if (model / "plan.json").is_file() or (model / "state.json").is_file() or (model / "manifest.json").is_file():
        return DiTSRPipeline.from_run(model, ema=ema, note=note)
    what = "no such folder" if not model.exists() else "not a folder" if not model.is_dir() else None
    what = what or "neither an exported pipeline (sr_pipeline.json), a run folder (plan.json) nor a checkpoint"
    raise UpscaleError(f"{shown(model)}: {what}; MODEL is what 'ditsr-plan run' or 'export RUN --merge OUT' wrote")


def check_out(out: Path) -> None:
    """OUT must be a folder or not exist yet (refused before the model loads)."""
    if out.exists() and not out.is_dir():
        raise UpscaleError(f"-o {shown(out)} exists and is not a folder: name a folder for the upscaled images")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _images_under(root: Path, out: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
    found = []
    for folder, subdirs, names in os.walk(root):  # links to folders are not followed
        here = Path(folder)
        subdirs[:] = sorted(d for d in subdirs if not _inside((here / d).resolve(), out))
        for name in sorted(names):
            path = here / name
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_symlink():
                skipped.append((path, "a symbolic link inside a folder (name the file itself to upscale it)"))
            elif not _inside(path.resolve(), out):
                found.append(path)
    return found


def plan_work(inputs: list[Path], out: Path, suffix: str, ext: str) -> tuple[list[Work], list[tuple[Path, str]]]:
    """The images of ``inputs`` and their outputs under ``out`` (``NAME{suffix}.{ext}``; ext ``same``: the
    input's), and the inputs that cannot be used (named, with why)."""
    out_resolved = out.resolve()
    problems: list[tuple[Path, str]] = []
    pairs: list[tuple[Path, Path]] = []
    for given in inputs:
        if given.is_dir():
            pairs += [(p, p.relative_to(given)) for p in _images_under(given, out_resolved, problems)]
        elif given.is_file() or given.exists():
            pairs.append((given, Path(given.name)))
        else:
            problems.append((given, "no such file or folder"))
    work: list[Work] = []
    seen: set[Path] = set()
    targets: dict[Path, Path] = {}
    for source, relative in pairs:
        key = source.resolve()
        if key in seen:
            continue  # the same file named twice
        seen.add(key)
        suffix_of = relative.suffix if ext == "same" else f".{ext}"
        target = out / relative.parent / f"{relative.stem}{suffix}{suffix_of}"
        if target.resolve() == key:
            problems.append((source, "its output would replace it (give another -o OUT or a --suffix)"))
            continue
        if target in targets:
            problems.append((source, f"its output {shown(target)} is {shown(targets[target])}'s too (rename one)"))
            continue
        targets[target] = source
        work.append(Work(source, target))
    return work, problems


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


class Progress:
    """Lines that say which image, step and tile, with the time left (by output pixels done so far)."""

    def __init__(self, total_pixels: int, say, every: float = 2.0):
        self.total, self.done, self.say, self.every = max(1, total_pixels), 0, say, every
        self.start = time.monotonic()
        self.last = 0.0

    def eta(self, fraction_of_current: float = 0.0, current: int = 0) -> str:
        done = self.done + fraction_of_current * current
        elapsed = time.monotonic() - self.start
        if done <= 0 or elapsed < 1:
            return "ETA ..."
        return f"ETA {_duration(elapsed * (self.total - done) / done)}"

    def tile(self, label: str, pixels: int, step: int, steps: int, tile: int, tiles: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every and not (step == steps and tile == tiles):
            return
        self.last = now
        fraction = ((step - 1) * tiles + tile) / (steps * tiles)
        self.say(f"  {label}: step {step}/{steps}, tile {tile}/{tiles}, {self.eta(fraction, pixels)}")


def run_job(
    pipe: DiTSRPipeline, work: list[Work], options: dict, overwrite: bool, say, max_pixels: int = MAX_PIXELS, warn=None
):
    """Upscale every image of ``work`` with ``pipe`` (``options``: the pipeline call's keywords); ``say``
    tells the progress, ``warn`` (default ``say``) each image skipped and why."""
    warn = warn or say
    outcome = Outcome()
    sizes = {}
    for item in work:
        sizes[item.source] = _size(item.source)
    progress = Progress(sum(w * h for w, h in sizes.values() if w) * pipe.scale**2, say)
    for i, item in enumerate(work, 1):
        if item.target.exists() and not overwrite:
            outcome.kept.append(item.target)
            continue
        label = f"[{i}/{len(work)}] {shown(item.source)}"
        try:
            image = open_image(item.source, max_pixels)
        except (ImageError, OSError, ValueError, SyntaxError) as exc:  # PIL raises these for a damaged file
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            outcome.failed.append((item.source, reason))
            warn(f"{label}: skipped ({reason})")
            continue
        w, h = image.size
        tile, tiles = pipe.tiles(w, h, pipe.settings(**{k: options.get(k) for k in ("tile", "overlap")}))
        scale = options.get("outscale") or pipe.scale
        sized = f"{w} x {h} -> {round(w * scale)} x {round(h * scale)}"
        if scale != pipe.scale:
            sized += f" (x{pipe.scale} resized to x{scale:g})"
        why = (
            " (tiles off, but this DiT takes square latents only)" if tiles > 1 and options.get("tile") == "off" else ""
        )
        say(f"{label}: {sized}, {tiles} tile{'s' if tiles > 1 else ''} of {tile} px{why}")
        pixels = w * h * pipe.scale**2

        def told(step, steps, t, n, label=label, pixels=pixels):
            progress.tile(label, pixels, step, steps, t, n)

        try:  # an image that decodes but cannot be used (NaN samples), or an output path that is taken
            with image:
                [sr] = pipe(image, on_tile=told, **options)
            item.target.parent.mkdir(parents=True, exist_ok=True)
            if sr.mode in ("RGBA", "LA") and item.target.suffix.lower() in (".jpg", ".jpeg"):
                warn(f"{label}: its alpha channel is dropped: JPEG has none (--ext png keeps it)")
            save_atomic(sr, item.target)
        except (ImageError, OSError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            outcome.failed.append((item.source, reason))
            warn(f"{label}: skipped ({reason})")
            continue
        progress.done += pixels
        outcome.written.append(item.target)
    return outcome


def _size(path: Path) -> tuple[int, int]:
    """An image's size from its header (0 x 0 when it cannot be read: it is named when it is reached)."""
    from PIL import Image

    if not path.is_file():  # a FIFO or a device would block
        return 0, 0
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # any undecodable header: the image itself is reported later, when read
        return 0, 0
