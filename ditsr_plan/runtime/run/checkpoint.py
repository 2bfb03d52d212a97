"""Checkpoints: tensors as safetensors, everything else as JSON; nothing is ever loaded with pickle.

A checkpoint ``RUN/checkpoints/step-NNNNNNNN`` holds the state after N completed steps. It is
written into a temporary folder, every file fsynced, a ``manifest.json`` with the SHA-256 of every
file written last, and the folder renamed into place: a crash mid-write leaves a ``.tmp-*`` folder
that is never read, and the previous checkpoint intact. Loading verifies the manifest; a checkpoint
that fails is reported and the previous complete one is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RunFailure
from .faults import fault_point

FORMAT = 2  # 2: EMA warm-up counter in state.json
PREFIX = "step-"


class CheckpointError(RunFailure):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Checkpoint:
    path: Path
    step: int

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(self.path / f"{name}.safetensors")

    def state(self) -> dict:
        return json.loads((self.path / "state.json").read_text())


def save_checkpoint(
    folder: Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict, keep: int
) -> Path:
    """Write ``tensors`` (file name -> tensors) and ``state`` (JSON) as checkpoint ``step``.

    Keeps the newest ``keep`` checkpoints."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{PREFIX}{step:08d}"
    tmp = folder / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        files = {}
        for name, group in tensors.items():
            path = tmp / f"{name}.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in group.items()}, str(path))
            files[path.name] = path
        (tmp / "state.json").write_text(json.dumps({"format": FORMAT, "step": step, **state}, indent=1))
        files["state.json"] = tmp / "state.json"
        for path in files.values():
            _fsync(path)
        fault_point("checkpoint-files", step)
        manifest = {"format": FORMAT, "step": step, "files": {n: _sha256(p) for n, p in files.items()}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _fsync(tmp / "manifest.json")
    except OSError as exc:  # disk full, quota, I/O error: leave nothing that looks like a checkpoint
        shutil.rmtree(tmp, ignore_errors=True)
        previous = [p.name for p in sorted(folder.glob(f"{PREFIX}*")) if p.is_dir()]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "there is no previous checkpoint"
        raise CheckpointError(
            f"could not write checkpoint {final.name} in {folder}: {exc.strerror or exc}; {kept} and "
            "'--resume' continues from it once the cause is fixed"
        ) from None
    fault_point("checkpoint-manifest", step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fault_point("checkpoint-prune", step)
    _prune(folder, keep)
    return final


def remove_partial(folder: Path) -> list[Path]:
    """Delete the temporary folders of checkpoint writes that never finished (a crash mid-write)."""
    if not folder.is_dir():
        return []
    partial = [p for p in folder.glob(f".tmp-{PREFIX}*") if p.is_dir()]
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    return partial


def _prune(folder: Path, keep: int) -> None:
    done = sorted(p for p in folder.glob(f"{PREFIX}*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def verify(path: Path) -> str | None:
    """None when the checkpoint at ``path`` is complete and intact, else why not. A checkpoint of another
    format (another version of the tool) raises :class:`CheckpointError`: it is not damaged, and
    passing over it would start the run again."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        return "no manifest.json (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable manifest.json ({exc})"
    if manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} was written by another version of ditsr-plan (checkpoint format "
            f"{manifest.get('format')!r}; this version reads format {FORMAT}). Resume it with the version that "
            "wrote it, or start a new run folder"
        )
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if _sha256(file) != digest:
            return f"{name} does not match its SHA-256 in the manifest (truncated or corrupted)"
        if name.endswith(".safetensors"):
            problem = _safetensors_problem(file)
            if problem:
                return f"{name} is not a readable safetensors file ({problem})"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file at ``path`` cannot be opened (its header), or None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            list(fh.keys())
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
        return str(exc).splitlines()[0][:200]
    return None


def newest_written(folder: Path) -> Checkpoint | None:
    """The newest checkpoint whose write finished (it has its manifest), without verifying its files."""
    written = sorted(p for p in folder.glob(f"{PREFIX}*") if (p / "manifest.json").is_file())
    return Checkpoint(written[-1], int(written[-1].name[len(PREFIX) :])) if written else None


def newest_complete(folder: Path, report=print) -> Checkpoint | None:
    """The newest checkpoint that verifies; each newer one that does not is reported and passed over."""
    if not folder.is_dir():
        return None
    for path in sorted((p for p in folder.glob(f"{PREFIX}*") if p.is_dir()), reverse=True):
        problem = verify(path)
        if problem is None:
            return Checkpoint(path, int(path.name[len(PREFIX) :]))
        report(f"checkpoint {path} is not usable: {problem}; trying the previous one")
    return None
