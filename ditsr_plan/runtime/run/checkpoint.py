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
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import RunFailure
from .faults import fault_point

FORMAT = 2  # 2: EMA warm-up counter in state.json
PREFIX = "step-"
NAME = re.compile(r"step-(\d{8})")  # a checkpoint folder's whole name; anything else (a copy) is not one
REQUIRED = ("state.json", "generator.safetensors")  # what every checkpoint's manifest lists


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


def step_of(path: Path) -> int | None:
    """The step of a checkpoint folder named ``step-NNNNNNNN``; None for any other name (``step-N.bak``)."""
    match = NAME.fullmatch(path.name)
    return int(match.group(1)) if match else None


def checkpoint_folders(folder: Path) -> list[Path]:
    """The checkpoint folders in ``folder`` (named ``step-NNNNNNNN``), oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if step_of(p) is not None and p.is_dir())


def _unreadable(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


@dataclass
class Checkpoint:
    path: Path
    step: int

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of ``name.safetensors``; a file that is missing or unreadable raises
        :class:`CheckpointError`."""
        from safetensors.torch import load_file

        path = self.path / f"{name}.safetensors"
        if not path.is_file():
            raise CheckpointError(f"checkpoint {self.path} has no {path.name}: it is incomplete")
        try:
            return load_file(path)
        except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
            raise CheckpointError(f"checkpoint {self.path}: {path.name} is unreadable ({_unreadable(exc)})") from None

    def state(self) -> dict:
        """``state.json``; one that is unreadable or not a JSON object raises :class:`CheckpointError`."""
        try:
            state = json.loads((self.path / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {self.path}: state.json is unreadable ({_unreadable(exc)})") from None
        if not isinstance(state, dict) or not isinstance(state.get("trainer"), dict):
            raise CheckpointError(f"checkpoint {self.path}: state.json is not a checkpoint's state")
        return state


def _write_failure(exc: BaseException) -> str:
    """What a failed write says, in words: an OSError's strerror; safetensors' own ``SafetensorError`` (what
    ``save_file`` raises on a full disk: "Error while serializing: I/O error: No space left on device (os
    error 28)") reduced to its cause."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = str(exc)
    found = re.search(r'I/O error: (.+?)(?: \(os error \d+\))?$|message: "([^"]+)"', text)
    return (found.group(1) or found.group(2)) if found else text


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
    except (OSError, _safetensor_error()) as exc:  # disk full, quota, I/O error: leave no partial checkpoint
        shutil.rmtree(tmp, ignore_errors=True)
        previous = [p.name for p in checkpoint_folders(folder)]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "there is no previous checkpoint"
        raise CheckpointError(
            f"could not write checkpoint {final.name} in {folder}: {_write_failure(exc)}; {kept} and "
            "'--resume' continues from it once the cause is fixed"
        ) from None
    fault_point("checkpoint-manifest", step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fault_point("checkpoint-prune", step)
    _prune(folder, keep)
    return final


def _safetensor_error() -> type[Exception]:
    """safetensors' own error type (raised by ``save_file`` for I/O errors such as a full disk)."""
    from safetensors import SafetensorError

    return SafetensorError


def remove_partial(folder: Path) -> list[Path]:
    """Delete the temporary folders of checkpoint writes that never finished (a crash mid-write)."""
    if not folder.is_dir():
        return []
    partial = [p for p in folder.glob(f".tmp-{PREFIX}*") if p.is_dir()]
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    return partial


def _prune(folder: Path, keep: int) -> None:
    done = checkpoint_folders(folder)  # a copy the user made (step-N.bak) is never pruned
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
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"unreadable manifest.json ({_unreadable(exc)})"
    if not isinstance(manifest, dict):
        return "manifest.json is not a checkpoint manifest (not a JSON object)"
    if manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} was written by another version of ditsr-plan (checkpoint format "
            f"{manifest.get('format')!r}; this version reads format {FORMAT}). Resume it with the version that "
            "wrote it, or start a new run folder"
        )
    problem = _manifest_problem(path, manifest)
    if problem:
        return problem
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


def _manifest_problem(path: Path, manifest: dict) -> str | None:
    """Why a manifest of the right format does not describe this checkpoint (its shape, its step), or None."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(d, str) for d in files.values()):
        return "manifest.json lists no files (its 'files' is not an object of file names to SHA-256 digests)"
    odd = [n for n in files if not isinstance(n, str) or Path(n).name != n or n in (".", "..")]
    if odd:
        return f"manifest.json names files outside the checkpoint ({', '.join(map(str, odd[:3]))})"
    lacking = [n for n in REQUIRED if n not in files]
    if lacking:
        return f"manifest.json does not list {' and '.join(lacking)}"
    step = step_of(path)
    if step is not None and manifest.get("step") != step:
        return f"manifest.json is of step {manifest.get('step')!r}, not of {path.name} (a renamed folder?)"
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


def _checkpoint(path: Path) -> Checkpoint:
    step = step_of(path)
    assert step is not None  # checkpoint_folders lists only the folders named step-N
    return Checkpoint(path, step)


def newest_written(folder: Path) -> Checkpoint | None:
    """The newest checkpoint whose write finished (it has its manifest), without verifying its files."""
    written = [p for p in checkpoint_folders(folder) if (p / "manifest.json").is_file()]
    return _checkpoint(written[-1]) if written else None


def newest_complete(folder: Path, report=print) -> Checkpoint | None:
    """The newest checkpoint that verifies; each newer one that does not is reported and passed over, and
    so is a folder whose name is not a checkpoint's (``step-00000020.bak``: a copy)."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob(f"{PREFIX}*")):
        if path.is_dir() and step_of(path) is None:
            report(f"{path} is not a checkpoint folder's name (step-NNNNNNNN): passed over")
    for path in reversed(checkpoint_folders(folder)):
        problem = verify(path)
        if problem is None:
            return _checkpoint(path)
        report(f"checkpoint {path} is not usable: {problem}; trying the previous one")
    return None
