"""``ditsr-plan evaluate RUN_OR_CHECKPOINT --pack DIR``: a trained checkpoint scored offline on a pack.

The generator is rebuilt from the run's ``plan.json`` (its pretrained base loaded from the plan's path),
the checkpoint's trained tensors put in -- its EMA by default -- and every pack image super-resolved with
the plan's eval settings (``--steps`` and ``--lq-init`` override them). The result: per-image metrics, their
mean, the bicubic baseline of the pack, and a grid of the worst and the best images by PSNR.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ditsr_plan.settings.schemas import DitModel, Eval, PixartModel
from ditsr_plan.terminal import shown

from ..analysis.status import read_graph
from ..records import json_safe, strict_json
from ..train.device import place
from ..train.generators import fingerprint, latent_and_generator, load_trained, patch_size
from ..validate.images import EvalImage, pretrained_lpips, save_png
from ..validate.packs import evaluate_pack, load_pack, pack_baseline, ranked
from ..validate.pictures import eval_grid
from ..validate.sampler import sample
from .checkpoint import Checkpoint, CheckpointError, newest_complete, step_of, verify
from .folder import RunError
from .logs import count_eta
from .resume import check_base

WRITTEN = ("sr", "worst-best.png", "results.json")  # everything an evaluation writes in its folder


@dataclass
class Evaluation:
    checkpoint: Path
    step: int
    ema: bool
    pack: str
    settings: dict
    images: dict[str, dict]
    mean: dict
    bicubic: dict
    lpips: bool
    grid: Path | None = None
    worst_to_best: list[str] = field(default_factory=list)  # image names by PSNR
    not_finite: list[str] = field(default_factory=list)  # images whose SR or metrics are NaN or infinite
    sr_files: dict[str, str] = field(default_factory=dict)  # image name -> its SR's file in sr/
    source: dict = field(default_factory=dict)  # what was scored: the checkpoint's and the pack's digests
    input: str = "upsample"  # the model's input: "stored" (the pack's upsampled LR) or "upsample" (the true LR)

    def to_json(self) -> dict:
        """Strict JSON data: non-finite numbers as "nan", "inf", "-inf" (as eval.jsonl writes them)."""
        data = {**asdict(self), "checkpoint": str(self.checkpoint), "grid": self.grid and str(self.grid)}
        return json_safe(data)


def find_checkpoint(target: Path, report=lambda line: None) -> tuple[Checkpoint, Path]:
    """(the checkpoint, its run folder) of a run folder (its newest complete checkpoint; each newer one that
    is not usable is passed over and ``report``-ed) or a checkpoint folder (``RUN/checkpoints/step-N``)."""
    if (target / "state.json").is_file() or (target / "manifest.json").is_file():
        return _checkpoint_folder(target), target.parent.parent
    if not (target / "plan.json").is_file():
        raise RunError(f"{target} is neither a run folder (no plan.json) nor a checkpoint (no state.json)")
    ckpt = newest_complete(target / "checkpoints", report=report)
    if ckpt is None:
        raise RunError(f"{target} has no complete checkpoint in checkpoints/")
    return ckpt, target


def _checkpoint_folder(target: Path) -> Checkpoint:
    """A checkpoint named on the command line: it must verify and sit in its run (``RUN/checkpoints/``)."""
    problem = verify(target)
    if problem:
        raise RunError(f"checkpoint {target} is not usable: {problem}")
    run_dir = target.parent.parent
    if target.parent.name != "checkpoints" or not (run_dir / "plan.json").is_file():
        raise RunError(
            f"checkpoint {target} is not inside its run folder (RUN/checkpoints/step-N beside RUN/plan.json): "
            "the generator is rebuilt from the run's plan.json. Evaluate it where the run keeps it, or copy the "
            "whole run folder"
        )
    step = step_of(target)
    if step is None:
        step = json.loads((target / "manifest.json").read_text(encoding="utf-8")).get("step")
        if not isinstance(step, int):
            raise RunError(f"checkpoint {target}: its manifest.json names no step")
    return Checkpoint(target, step)


def _digest(path: Path) -> str | None:
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def source_of(ckpt: Checkpoint, pack: Path) -> dict:
    """What identifies an evaluation: the checkpoint's manifest (the SHA-256 of every file) and the pack's."""
    return {
        "checkpoint_manifest": _digest(ckpt.path / "manifest.json"),
        "pack_manifest": _digest(pack / "manifest.json"),
        "pack_folder": str(pack.resolve()),
    }


def prepare_out(out: Path, source: dict) -> None:
    """Refuse ``out`` unless it is missing, empty, or an evaluation of the same checkpoint and pack by this
    tool, finished or not (which is then replaced: its ``sr/``, grid and ``results.json`` removed). Whose it
    is, ``results.json`` says: it is written first (``"complete": false``) and again at the end, so that a
    folder of someone else's images is never taken for an evaluation that stopped."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise RunError(f"evaluate: {shown(out)} is not a folder (a file or a symbolic link): name another --out")
    if out.exists() and any(out.iterdir()):
        entries = sorted(p.name for p in out.iterdir())
        earlier = None
        with contextlib.suppress(OSError, ValueError, AttributeError):
            earlier = json.loads((out / "results.json").read_text(encoding="utf-8")).get("source")
        linked = [name for name in entries if (out / name).is_symlink()]
        if earlier != source or not set(entries) <= set(WRITTEN) or linked:
            listed = ", ".join(shown(e) for e in entries[:5]) + (
                f" and {len(entries) - 5} more" if len(entries) > 5 else ""
            )
            what = "an evaluation of another checkpoint or pack" if earlier else "not an evaluation's folder"
            if linked and earlier == source:
                what = f"an evaluation whose {shown(linked[0])} is a symbolic link"
            raise RunError(
                f"evaluate: {shown(out)} is not empty and is {what} (it holds {listed}): nothing was written. "
                "Name another --out, or remove that folder"
            )
        for name in WRITTEN:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(strict_json({"source": source, "complete": False}) + "\n", encoding="utf-8")


def sr_file_names(names: list[str]) -> dict[str, str]:
    """Each pack image's SR file name in ``sr/``: its name with ``.png``, unless two images would share it
    (``a.png`` and ``a.bmp``): then ``a_bmp.png`` for the one that is not a PNG already."""
    taken: set[str] = set()
    files: dict[str, str] = {}
    pngs = [n for n in names if Path(n).suffix.lower() == ".png"]
    for name in pngs + sorted(n for n in names if n not in pngs):
        path = Path(name)
        candidates = [path.with_suffix(".png").name, f"{path.stem}_{path.suffix.lstrip('.')}.png"]
        candidates += [f"{path.stem}_{path.suffix.lstrip('.')}_{i}.png" for i in range(2, len(names) + 2)]
        chosen = next(c for c in candidates if c.lower() not in taken)
        taken.add(chosen.lower())
        files[name] = chosen
    return files


def evaluate_checkpoint(
    ckpt: Checkpoint,
    run_dir: Path,
    pack: Path,
    settings: Eval,
    ema: bool = True,
    device: str = "auto",
    limit: int | None = None,
    out: Path | None = None,
    progress=lambda line: None,
) -> Evaluation:
    """Score ``ckpt`` (of the run in ``run_dir``; :func:`find_checkpoint` finds both) on ``pack`` with eval
    ``settings`` (steps, lq_init, cfg, seed); write ``out/worst-best.png``, ``out/results.json`` and the SR
    images when ``out`` is given (refused when it holds anything else: :func:`prepare_out`)."""
    graph = read_graph(run_dir)
    source = source_of(ckpt, pack)
    if out is not None:
        prepare_out(out, source)
    placement = place(device, "auto")
    latent, model = latent_and_generator(graph, placement.device)
    model_settings = graph.block("model")
    model_path = model_settings.path if isinstance(model_settings, DitModel | PixartModel) else None
    base = ckpt.state()["trainer"].get("base")
    check_base(f"checkpoint {ckpt.path}", base, fingerprint(model), "the run's plan.json now loads", model_path)
    used_ema = load_weights(model, ckpt, ema)
    scale = graph.block("data").scale
    images = load_pack(pack, scale, latent.factor * patch_size(model) * scale, limit, settings.pack_input)
    lpips_fn = pretrained_lpips(placement.device) if settings.lpips == "auto" else None
    diffusion = graph.block("diffusion")
    kept, broken = {}, []
    done = [0]
    progress(f"evaluate: sampling {len(images)} images, DDIM {settings.steps} steps each ...")
    started = time.perf_counter()

    def sample_fn(lr_up):
        sr = sample(model, latent, diffusion, lr_up, settings, placement, graph.block("data").crop)
        done[0] += 1
        progress(f"evaluate: {count_eta(done[0], len(images), time.perf_counter() - started)}")
        return sr

    def keep(name, sr):
        kept[name] = sr
        if not bool(sr.isfinite().all()):
            broken.append(name)

    scored = _marked(evaluate_pack(images, sample_fn, scale, lpips_fn, keep=keep), broken, lpips_fn is not None)
    result = Evaluation(
        ckpt.path,
        ckpt.step,
        used_ema,
        str(pack),
        settings.model_dump(mode="json"),
        scored["images"],
        scored["mean"],
        pack_baseline(images, scale, lpips_fn),
        lpips_fn is not None,
        worst_to_best=ranked(scored["images"]),
        not_finite=_not_finite(scored["images"], broken),
        sr_files=sr_file_names([im.name for im in images]),
        source=source,
        input=images[0].input,
    )
    if out is not None:
        _write(out, result, images, kept)
    return result


def _marked(scored: dict, broken: list[str], lpips: bool) -> dict:
    """The metrics of an SR that holds NaN or infinity (``broken``) as NaN (the metrics give None), and the
    mean NaN too when any image is: a broken generator is never hidden behind the mean of the others."""
    if not broken:
        return scored
    unmeasured = set() if lpips else {"lpips"}

    def nan(row: dict) -> dict:
        return {k: math.nan if v is None and k not in unmeasured else v for k, v in row.items()}

    images = {n: nan(m) if n in broken else m for n, m in scored["images"].items()}
    mean = {k: v if isinstance(v, int) or k in unmeasured else math.nan for k, v in scored["mean"].items()}
    return {**scored, "images": images, "mean": mean}


def _not_finite(rows: dict[str, dict], broken: list[str]) -> list[str]:
    """The images whose SR held NaN/infinity or whose metrics are not finite (sorted)."""
    bad = {n for n, m in rows.items() if any(isinstance(v, float) and not math.isfinite(v) for v in m.values())}
    return sorted(bad | set(broken))


def load_weights(model, ckpt: Checkpoint, ema: bool) -> bool:
    """The checkpoint's trained tensors into ``model`` (then its EMA, when asked and present): whether the EMA
    was used. A tensor that does not fit (a name or a shape) is refused, naming it."""
    misfit = load_trained(model, ckpt.tensors("generator"))
    if misfit:
        raise RunError(f"checkpoint {ckpt.path} does not fit the plan's generator ({misfit}): was the model changed?")
    if not (ema and (ckpt.path / "ema.safetensors").is_file()):
        return False
    misfit = load_trained(model, ckpt.tensors("ema"), complete=False)
    if misfit:
        raise CheckpointError(f"checkpoint {ckpt.path}: its EMA does not fit the plan's generator ({misfit})")
    return True


def _write(out: Path, result: Evaluation, images, kept: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sr").mkdir(exist_ok=True)
    for name, sr in kept.items():
        save_png(sr.nan_to_num(0.0), out / "sr" / result.sr_files[name])
    order = result.worst_to_best
    picked = order[:3] + [n for n in order[-3:] if n not in order[:3]]
    by_name = {im.name: im for im in images}
    rows = [(EvalImage(n, by_name[n].gt, by_name[n].lr_up), kept[n].nan_to_num(0.0)) for n in picked]
    grid = out / "worst-best.png"
    eval_grid(
        rows,
        result.images,
        result.bicubic,
        result.step,
        grid,
        title=f"{Path(result.pack).name}: the {min(3, len(order))} worst and best by PSNR (step {result.step})",
    )
    result.grid = grid
    (out / "results.json").write_text(strict_json(result.to_json()) + "\n", encoding="utf-8")
