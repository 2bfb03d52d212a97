"""``ditsr-plan compare RUN...``: final and best validation metrics of several runs side by side,
and one picture of the validation images across the runs. Reads run folders; imports no torch."""

from __future__ import annotations

import json
from pathlib import Path

from ..records import EvalRecord, read_evals
from .status import read_graph, run_status

LOWER_IS_BETTER = {"lpips"}
MEAN_METRICS = ("psnr", "ssim", "lpips")
DEFOCUS = "defocus"


def summarise(run: Path) -> dict:
    """One row: the run (its folder's name), its plan, how far it got, its final and best mean metrics, the
    defocus image's ESR/FHR, per-image finals, the bicubic baseline and the eval settings."""
    graph = read_graph(run)  # a plan.json cut short, of another version or edited: RunFolderError
    evals = read_evals(run)
    status = run_status(run)
    row: dict = {
        "run": run.name,
        "path": str(run),
        "plan": graph.name,
        "hash": graph.hash,
        "steps": evals[-1].step if evals else None,
        "finished": status.finished,
        "status": status.describe(),
    }
    if not evals:
        return row
    final: EvalRecord = evals[-1]
    row["eval_settings"] = final.settings
    for metric in MEAN_METRICS:
        row[metric] = final.mean.get(metric)
        values = [(e.mean.get(metric), e.step) for e in evals if e.mean.get(metric) is not None]
        if values:
            best = (min if metric in LOWER_IS_BETTER else max)(values)
            row[f"best_{metric}"], row[f"best_{metric}_step"] = best
        else:
            row[f"best_{metric}"] = row[f"best_{metric}_step"] = None
    defocus = final.images.get(DEFOCUS, {})
    row["defocus_esr"], row["defocus_fhr"] = defocus.get("esr"), defocus.get("fhr")
    row["images"] = final.images
    row["bicubic"] = final.bicubic
    return row


def eval_settings_differ(rows: list[dict]) -> list[str]:
    """Warnings when runs validated differently (their metrics are then not comparable)."""
    settings = [s for r in rows if (s := r.get("eval_settings"))]
    keys = sorted({k for s in settings for k in s if k != "every"})
    differ = [k for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1]
    if not differ:
        return []
    detail = "; ".join(
        f"{k}: " + ", ".join(f"{r['run']}={r['eval_settings'].get(k)}" for r in rows if r.get("eval_settings"))
        for k in differ
    )
    return [f"warning: the runs validated with different eval settings ({detail}): their metrics do not compare"]


def bicubic_rows(rows: list[dict]) -> list[dict]:
    """One ``bicubic`` row per distinct baseline among the runs (one when they validate on the same images)."""
    out: list[dict] = []
    for r in rows:
        base = r.get("bicubic")
        if not base or any(o["images"] == {k: v for k, v in base.items() if k != "mean"} for o in out):
            continue
        mean = base["mean"]
        defocus = base.get(DEFOCUS, {})
        out.append(
            {
                "run": "bicubic",
                "plan": "-",
                **{m: mean.get(m) for m in MEAN_METRICS},
                "defocus_esr": defocus.get("esr"),
                "defocus_fhr": defocus.get("fhr"),
                "images": {k: v for k, v in base.items() if k != "mean"},
            }
        )
    return out


COLUMNS = [
    ("run", "run"),
    ("plan", "plan"),
    ("steps", "steps"),
    ("psnr", "PSNR"),
    ("ssim", "SSIM"),
    ("lpips", "LPIPS"),
    ("defocus_esr", "defocus ESR"),
    ("defocus_fhr", "defocus FHR"),
    ("best_psnr", "best PSNR"),
    ("best_psnr_step", "at"),
    ("best_lpips", "best LPIPS"),
    ("best_lpips_step", "at"),
]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def _label(row: dict) -> str:
    """The run's folder name; ``*`` marks an unfinished run."""
    return row["run"] + ("" if row.get("finished", True) else "*")


def table(rows: list[dict], markdown: bool = False) -> str:
    unfinished = [r for r in rows if not r.get("finished", True)]
    rows = rows + bicubic_rows(rows)
    header = [title for _, title in COLUMNS]
    body = [[_label(r) if key == "run" else _cell(r.get(key)) for key, _ in COLUMNS] for r in rows]
    images = sorted({role for r in rows for role in r.get("images", {})})
    per_image = []
    for role in images:
        for metric in ("psnr", "ssim", "esr", "fhr"):
            per_image.append(
                [f"{role} {metric}", *(_cell(r.get("images", {}).get(role, {}).get(metric)) for r in rows)]
            )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        if per_image:
            lines += [
                "",
                "| per image | " + " | ".join(_label(r) for r in rows) + " |",
                "|" + " --- |" * (len(rows) + 1),
            ]
            lines += ["| " + " | ".join(row) + " |" for row in per_image]
        return "\n".join(lines + _footnote(unfinished)) + "\n"
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body]]
    if per_image:
        names = ["per image", *(_label(r) for r in rows)]
        widths = [max(len(x) for x in col) for col in zip(names, *per_image, strict=True)]
        lines += [""] + [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [names, *per_image]
        ]
    return "\n".join(lines + _footnote(unfinished)) + "\n"


def _footnote(unfinished: list[dict]) -> list[str]:
    return ["", *(f"* {r['run']}: {r['status']}" for r in unfinished)] if unfinished else []


def side_by_side(runs: list[Path], path: Path) -> None:
    """Rows: the runs' final SR of each validation image, then the GT; columns: the images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    finals = []
    for run in runs:
        steps = sorted(p for p in (run / "eval").glob("step-*") if p.is_dir())
        finals.append(steps[-1] if steps else None)
    roles = sorted({p.stem for f in finals if f for p in f.glob("*.png")})
    if not roles:
        raise ValueError("none of the runs has validation images (add an 'eval' line to the plan)")
    gt_dir = next((run / "eval" / "inputs" for run in runs if (run / "eval" / "inputs").is_dir()), None)
    rows = len(runs) + (gt_dir is not None)
    fig, axes = plt.subplots(rows, len(roles), figsize=(3 * len(roles), 3 * rows), squeeze=False)
    if gt_dir is not None:
        for c, role in enumerate(roles):
            if (gt_dir / f"gt-{role}.png").is_file():
                axes[-1, c].imshow(Image.open(gt_dir / f"gt-{role}.png"), interpolation="nearest")
            axes[-1, c].set_xticks([])
            axes[-1, c].set_yticks([])
        axes[-1, 0].set_ylabel("GT", fontsize=8)
    for r, (run, final) in enumerate(zip(runs, finals, strict=True)):
        for c, role in enumerate(roles):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if final and (final / f"{role}.png").is_file():
                ax.imshow(Image.open(final / f"{role}.png"), interpolation="nearest")
            if r == 0:
                ax.set_title(role, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{run.name}\n({final.name if final else 'no eval'})", fontsize=8)
    fig.tight_layout()
    from ditsr_plan.compiler.plot import figure_format

    fig.savefig(path, dpi=90, format=figure_format(path))
    plt.close(fig)
