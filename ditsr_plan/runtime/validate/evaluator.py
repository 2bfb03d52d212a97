"""Validation during a run: SR of fixed images with the EMA weights, metrics beside the bicubic baseline,
``eval.jsonl`` and pictures.

``eval every=N steps=S images=builtin lq_init=... cfg=...``: the images are ``images.py``'s, sampling is
``sampler.py``'s, the metrics ``metrics.py``'s. The bicubic baseline -- the metrics of the LR upsampled
by bicubic, the model's input -- is computed once and written beside every eval's metrics, so that every
number has its reference.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..records import EvalRecord, append_jsonl, read_evals
from ..train.generators import patch_size
from .images import eval_images, pretrained_lpips, save_png
from .metrics import all_metrics, mean_metrics
from .packs import evaluate_pack, load_pack, pack_baseline
from .pictures import eval_grid, progression_strips
from .sampler import sample


class Evaluator:
    def __init__(self, trainer, settings: dict, run_dir: Path):
        self.trainer, self.settings = trainer, settings
        self.dir = run_dir / "eval"
        self.jsonl = run_dir / "eval.jsonl"
        data = trainer.data
        multiple = trainer.latent.factor * patch_size(trainer.model)
        self.images = eval_images(
            settings["images"],
            settings["size"],
            multiple * data.scale,
            data.scale,
            data.degrade,
            settings["seed"],
        )
        self.lpips = pretrained_lpips(trainer.placement.device) if settings["lpips"] == "auto" else None
        self.bicubic = self._bicubic_baseline()
        self.pack, self.pack_bicubic = [], {}
        if settings.get("pack"):
            self.pack = load_pack(Path(settings["pack"]), data.scale, multiple * data.scale, settings.get("pack_limit"))
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
            return sample(t.model, t.latent, t.blocks["diffusion"], lr_up, self.settings, t.placement)

    def run(self, step: int) -> EvalRecord:
        """Evaluate after ``step`` completed steps: save images and the grid; return the record
        (``append`` writes it to eval.jsonl)."""
        folder = self.dir / f"step-{step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        per_image, results = {}, []
        device = self.trainer.placement.device
        for image in self.images:
            sr = self.sample(image.lr_up)
            per_image[image.role] = all_metrics(sr, image.gt.to(device), self.trainer.data.scale, self.lpips)[0]
            save_png(sr[0].cpu(), folder / f"{image.role}.png")
            results.append((image, sr[0].cpu()))
        record = EvalRecord(
            step=step,
            images=per_image,
            mean=mean_metrics(list(per_image.values())),
            bicubic=self.bicubic,
            lpips=self.lpips is not None,
            settings=dict(self.settings),
        )
        if self.pack:
            scored = evaluate_pack(self.pack, self.sample, self.trainer.data.scale, self.lpips)
            record.pack = {"dir": self.settings["pack"], **scored, "bicubic": self.pack_bicubic}
        eval_grid(results, per_image, self.bicubic, step, self.dir / f"grid-{step:08d}.png")
        progression_strips(self.dir, [im.role for im in self.images], {im.role: im.gt[0] for im in self.images})
        return record

    def append(self, record: EvalRecord) -> None:
        append_jsonl(self.jsonl, record.to_json())

    def records(self) -> list[EvalRecord]:
        return read_evals(self.jsonl.parent)
