"""Validation during a run: SR of fixed images with the EMA weights, metrics beside the bicubic baseline,
``eval.jsonl`` and pictures.

``eval every=N steps=S images=builtin lq_init=... cfg=...``: the images are ``images.py``'s, sampling is
``sampler.py``'s, the metrics ``metrics.py``'s. The bicubic baseline -- the metrics of the LR upsampled
by bicubic, the model's input -- is computed once and written beside every eval's metrics, so that every
number has its reference.

An SR that is not finite (a generator that gives NaN) does not stop the run: its metrics are recorded as
NaN (``"nan"`` in ``eval.jsonl``), so is the mean of every metric it enters, and the record carries a
flag (``eval_not_finite``) that the console, ``summary.json`` and the report show; a ``watch`` can stop
the run on it, ``keep best`` never keeps it.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from ditsr_plan.settings.schemas import Eval

from ..records import EvalRecord, append_jsonl, read_evals
from ..train.generators import patch_size
from .images import eval_images, pretrained_lpips, save_png
from .metrics import all_metrics, mean_metrics
from .packs import evaluate_pack, load_pack, pack_baseline
from .pictures import eval_grid, progression_strips
from .sampler import sample


class Evaluator:
    def __init__(self, trainer, settings: Eval, run_dir: Path):
        self.trainer, self.settings = trainer, settings
        self.dir = run_dir / "eval"
        self.jsonl = run_dir / "eval.jsonl"
        data = trainer.data
        multiple = trainer.latent.factor * patch_size(trainer.model)
        self.images = eval_images(
            settings.images,
            settings.size,
            multiple * data.scale,
            data.scale,
            data.degrade,
            settings.seed,
        )
        self.lpips = pretrained_lpips(trainer.placement.device) if settings.lpips == "auto" else None
        self.bicubic = self._bicubic_baseline()
        self.pack, self.pack_bicubic = [], {}
        if settings.pack:
            self.pack = load_pack(
                Path(settings.pack), data.scale, multiple * data.scale, settings.pack_limit, settings.pack_input
            )
            self.pack_bicubic = pack_baseline(self.pack, data.scale, self.lpips)
        inputs = self.dir / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        for image in self.images:  # for compare's side-by-side picture, and for people
            save_png(image.gt[0], inputs / f"gt-{image.role}.png")
            save_png(image.lr_up[0], inputs / f"lr-{image.role}.png")

    def lpips_note(self) -> str:
        if self.lpips is not None:
            return "LPIPS (alex, pretrained)"
        return "LPIPS unavailable (pretrained AlexNet not in torchvision's cache; never from a random trunk)"

    def _bicubic_baseline(self) -> dict[str, dict]:
        """The metrics of the bicubic-upsampled LR (what the model is given), per role and their mean."""
        scale = self.trainer.data.scale
        rows = {image.role: all_metrics(image.lr_up, image.gt, scale, self.lpips)[0] for image in self.images}
        return {"mean": mean_metrics(list(rows.values())), **rows}

    def sample(self, lr_up):
        """SR of one LR image with the EMA weights (or the generator's own without an EMA)."""
        t = self.trainer
        weights = t.ema.applied(t.model) if t.ema is not None else contextlib.nullcontext()
        with weights:
            return sample(t.model, t.latent, t.diffusion_settings, lr_up, self.settings, t.placement, t.data.crop)

    def _metrics(self, sr, gt) -> dict:
        """An SR's metrics against its GT; every one NaN when the SR is not finite."""
        if not bool(torch.isfinite(sr).all()):
            return self._nan_row(self.bicubic[self.images[0].role])
        return all_metrics(sr, gt.to(sr.device), self.trainer.data.scale, self.lpips)[0]

    def _nan_row(self, keys) -> dict:
        return {k: math.nan if k != "lpips" or self.lpips is not None else None for k in keys}

    def _pack_scores(self) -> tuple[dict, list[str]]:
        """The pack's scores (non-finite SRs' metrics as NaN) and the names of the pack images whose SR was
        not finite."""
        bad: list[int] = []

        def checked(lr_up):
            sr = self.sample(lr_up)
            if not bool(torch.isfinite(sr).all()):
                bad.append(id(lr_up))
            return sr

        scored = evaluate_pack(self.pack, checked, self.trainer.data.scale, self.lpips)
        names = [im.name for im in self.pack if id(im.lr_up) in bad]
        if names:
            scored["images"].update({name: self._nan_row(scored["images"][name]) for name in names})
            scored["mean"] = not_finite_mean(scored["images"])
        return scored, names

    def run(self, step: int) -> EvalRecord:
        """Evaluate after ``step`` completed steps: save images and the grid; return the record
        (``append`` writes it to eval.jsonl)."""
        folder = self.dir / f"step-{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        per_image, results = {}, []
        for image in self.images:
            sr = self.sample(image.lr_up)
            per_image[image.role] = self._metrics(sr, image.gt)
            sr = torch.nan_to_num(sr[0].cpu(), nan=0.0)  # pictures of a non-finite SR: NaN drawn grey
            save_png(sr, folder / f"{image.role}.png")
            results.append((image, sr))
        record = EvalRecord(
            step=step,
            images=per_image,
            mean=not_finite_mean(per_image),
            bicubic=self.bicubic,
            lpips=self.lpips is not None,
            settings=self.settings.model_dump(mode="json"),
        )
        bad = [role for role, row in per_image.items() if _has_nan(row)]
        if self.pack:
            scored, bad_pack = self._pack_scores()
            record.pack = {
                "dir": self.settings.pack,
                "input": self.pack[0].input,  # stored: the pack's upsampled LR; upsample: the true LR, upsampled here
                **scored,
                "bicubic": self.pack_bicubic,
            }
            bad += [f"pack image {name}" for name in bad_pack]
        if bad:
            record.flags.append(not_finite_flag(step, bad))
        eval_grid(results, per_image, self.bicubic, step, self.dir / f"grid-{step:08d}.png")
        progression_strips(self.dir, [im.role for im in self.images], {im.role: im.gt[0] for im in self.images})
        return record

    def append(self, record: EvalRecord) -> None:
        append_jsonl(self.jsonl, record.to_json())

    def records(self) -> list[EvalRecord]:
        return read_evals(self.jsonl.parent)


def _has_nan(row: dict) -> bool:
    return any(isinstance(v, float) and math.isnan(v) for v in row.values())


def not_finite_mean(rows: dict[str, dict]) -> dict:
    """The mean of metric rows (``mean_metrics``), NaN for every metric that is NaN in any row: an eval
    with a non-finite SR has no finite mean."""
    mean = mean_metrics(list(rows.values()))
    for key in mean:
        if any(isinstance(r.get(key), float) and math.isnan(r[key]) for r in rows.values()):
            mean[key] = math.nan
    return mean


def not_finite_flag(step: int, images: list[str]) -> dict:
    shown = ", ".join(images[:5]) + (f" and {len(images) - 5} more" if len(images) > 5 else "")
    return {
        "flag": "eval_not_finite",
        "step": step,
        "images": images,
        "message": f"validation after {step} steps: the SR of {shown} is not finite (NaN or inf); its metrics "
        "are recorded as nan. Training goes on; a 'watch' counts a nan metric as holding (so a "
        "'watch ...: stop' stops the run)",
    }
