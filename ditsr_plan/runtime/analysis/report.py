"""``ditsr-plan report RUN``: one self-contained HTML file (images embedded, no scripts, no network).

Sections: the schedule with its stages; raw and weighted loss per term; the weights as logged; the
learning rates; validation metrics over steps; gradient diagnostics; the discriminator; the latest
eval grids and the progression strips. Imports no torch: it reads the run folder's files.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

from ...terminal import shown
from ..records import EvalRecord, MetricsRecord, read_evals, read_metrics
from .status import RunFolderError, not_a_run, run_status


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    _plt().close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _file_png(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _stage_bands(ax, stages) -> None:
    for i, (name, start, end) in enumerate(stages):
        ax.axvspan(start, end, color="0.92" if i % 2 else "0.98", zorder=0)
        ax.text((start + end) / 2, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)


def _series_plot(
    stages,
    series: dict[str, tuple[list, list]],
    title: str,
    ylabel: str,
    log: bool = False,
    reference: tuple[str, float | None] | None = None,
) -> str:
    """Lines over the steps with the stages as bands; ``reference`` (label, value): a dashed horizontal line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    _stage_bands(ax, stages)
    for name, (xs, ys) in series.items():
        points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None and math.isfinite(y)]
        if points:
            ax.plot(*zip(*points, strict=True), label=name, linewidth=1.3)
    if reference is not None and reference[1] is not None and math.isfinite(reference[1]):
        ax.axhline(reference[1], color="0.3", linestyle="--", linewidth=1.0, label=reference[0])
    if log and ax.lines:
        ax.set_yscale("symlog", linthresh=1e-3)  # a hinge GAN loss can be negative
    ax.set_title(title, pad=14)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if ax.lines:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return _png(fig)


def _loss_sections(stages, terms: list[str], metrics: list[MetricsRecord]) -> list[tuple[str, str]]:
    steps = [m.step for m in metrics]
    raw = {t: (steps, [m.terms[t].raw for m in metrics]) for t in terms}
    weighted = {t: (steps, [m.terms[t].weighted if m.terms[t].live else None for m in metrics]) for t in terms}
    weighted["total"] = (steps, [m.loss for m in metrics])
    weights = {t: (steps, [m.terms[t].weight for m in metrics]) for t in terms}
    lrs = {k: (steps, [m.lr[k] for m in metrics]) for k in (metrics[0].lr if metrics else {})}
    return [
        ("Loss per term (raw, unweighted)", _img(_series_plot(stages, raw, "raw value per term", "raw", True), "raw")),
        (
            "Loss per term (weighted)",
            _img(_series_plot(stages, weighted, "weight x raw, and the total", "loss", log=True), "weighted"),
        ),
        ("Weights as logged", _img(_series_plot(stages, weights, "weight per term", "weight"), "weights")),
        ("Learning rates", _img(_series_plot(stages, lrs, "learning rates", "lr"), "lr")),
    ]


def _validation_section(stages, evals: list[EvalRecord]) -> tuple[str, str]:
    eval_steps = [e.step for e in evals]
    figs = []
    for metric in ("psnr", "ssim", "lpips", "esr", "fhr"):
        series = {"mean": (eval_steps, [e.mean.get(metric) for e in evals])}
        for role in evals[-1].images:
            series[role] = (eval_steps, [e.images.get(role, {}).get(metric) for e in evals])
        if any(v is not None for _, ys in series.values() for v in ys):
            reference = ("bicubic (mean)", evals[-1].bicubic.get("mean", {}).get(metric))
            figs.append(_img(_series_plot(stages, series, metric, metric, reference=reference), metric))
        else:
            figs.append(f"<p>{metric}: unavailable in this run (no pretrained trunk).</p>")
    return "Validation metrics", "\n".join(figs)


def _gradient_section(stages, terms: list[str], metrics: list[MetricsRecord]) -> tuple[str, str] | None:
    grads = [(m.step, g) for m in metrics if (g := m.gradients)]
    if not grads:
        return None
    gs = [step for step, _ in grads]
    norms = {t: (gs, [g["norm"].get(t) for _, g in grads]) for t in terms}
    pairs = sorted({p for _, g in grads for p in g["cosine"]})
    cos = {p: (gs, [g["cosine"].get(p) for _, g in grads]) for p in pairs}
    norm_plot = _series_plot(stages, norms, "|grad of weighted term| on the model output", "norm", log=True)
    cos_plot = _series_plot(stages, cos, "cosine between terms' gradients (< 0: pulling apart)", "cosine")
    return "Gradient diagnostics", _img(norm_plot, "grad norms") + _img(cos_plot, "grad cosines")


def _discriminator_section(stages, metrics: list[MetricsRecord]) -> tuple[str, str] | None:
    disc = [(m.step, d) for m in metrics if (d := m.discriminator)]
    if not disc:
        return None
    ds = [step for step, _ in disc]
    series = {
        f"{name} {key}": (ds, [d.get(name, {}).get(key) for _, d in disc])
        for name in disc[-1][1]
        for key in ("loss", "real", "fake")
    }
    plot = _series_plot(stages, series, "D loss, mean D(real), mean D(fake)", "value")
    return "Discriminator", _img(plot, "discriminator")


def _images_section(run_dir: Path) -> tuple[str, str] | None:
    eval_dir = run_dir / "eval"
    grids = sorted(eval_dir.glob("grid-*.png"))[-3:]
    strips = sorted(eval_dir.glob("progress-*.png"))
    if not grids and not strips:
        return None
    return "Validation images", "\n".join(_img(_file_png(p), p.stem) for p in [*strips, *grids])


def _facts(graph, run_dir: Path, metrics: list[MetricsRecord], evals: list[EvalRecord], summary: dict) -> list[str]:
    status = run_status(run_dir)
    facts = [
        f"plan <b>{html.escape(graph.name)}</b> · hash {graph.hash} · {graph.total_steps} steps in the plan",
        (
            f"<b>{html.escape(status.describe())}</b>"
            if status.finished
            else f'<span class="flag">{html.escape(status.describe())}</span>'
        ),
        f"terms: {', '.join(html.escape(f'{t.name} ({t.kind})') for t in graph.terms.values())}",
    ]
    if summary:
        facts.append(
            f"first loss {summary.get('first_loss')}, last loss {summary.get('last_loss')}; "
            f"skipped images: {len(summary.get('skipped_images', {}))}"
        )
    if evals:
        last = evals[-1].mean
        facts.append(f"last validation (after {evals[-1].step} steps, mean): " + _values(last))
        if evals[-1].bicubic.get("mean"):
            facts.append("bicubic baseline (mean): " + _values(evals[-1].bicubic["mean"]))
    return facts


def _values(values: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in values.items() if v is not None)


def _flags_section(metrics: list[MetricsRecord], evals: list[EvalRecord]) -> tuple[tuple[str, str] | None, str | None]:
    """The term flags of metrics.jsonl, the evals' flags (a non-finite SR) and the skipped steps."""
    flags = [f for m in metrics for f in m.flags] + [f for e in evals for f in e.flags]
    skipped = [m for m in metrics if m.skipped]
    if not flags and not skipped:
        return None, None
    warnings = [f"step {f['step']}: {html.escape(f['message'])}" for f in flags]
    warnings += [f"step {m.step} skipped: non-finite {html.escape(', '.join(m.skipped or []))}" for m in skipped]
    section = ("Flags", "<ul>" + "".join(f'<li class="flag">{w}</li>' for w in warnings) + "</ul>")
    return section, f'<span class="flag">{len(flags)} flag(s), {len(skipped)} skipped step(s): see Flags</span>'


def build_report(run_dir: Path) -> str:
    from ditsr_plan.compiler.graph import ScheduleGraph
    from ditsr_plan.compiler.plot import plot_schedule

    graph = ScheduleGraph.from_json(json.loads((run_dir / "plan.json").read_text()))
    stages = [(s.name, s.start, s.end) for s in graph.stages]
    metrics, evals = read_metrics(run_dir), read_evals(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    terms = list(graph.terms)
    buffer = io.BytesIO()
    plot_schedule(graph, buffer)
    sections = [("Schedule", _img(base64.b64encode(buffer.getvalue()).decode(), "schedule"))]
    sections += _loss_sections(stages, terms, metrics)
    optional = [
        _validation_section(stages, evals) if evals else None,
        _gradient_section(stages, terms, metrics),
        _discriminator_section(stages, metrics),
        _images_section(run_dir),
    ]
    sections += [s for s in optional if s is not None]
    facts = _facts(graph, run_dir, metrics, evals, summary)
    flags, flag_fact = _flags_section(metrics, evals)
    if flags and flag_fact:
        sections.insert(0, flags)
        facts.append(flag_fact)
    toc = "".join(f'<li><a href="#s{i}">{html.escape(t)}</a></li>' for i, (t, _) in enumerate(sections))
    body = "".join(f'<section id="s{i}"><h2>{html.escape(t)}</h2>{c}</section>' for i, (t, c) in enumerate(sections))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ditsr-plan report: {html.escape(graph.name)}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}}img{{max-width:100%;display:block;
margin:.5em 0}}section{{border-top:1px solid #ddd;margin-top:1.5em}}h1{{font-size:1.5em}}h2{{font-size:1.15em}}
.flag{{color:#b00}}</style>
</head><body><h1>ditsr-plan report: {html.escape(graph.name)}</h1>
<p>{"<br>".join(facts)}</p><ul>{toc}</ul>{body}</body></html>
"""


def _check_output(output: Path) -> None:
    """``-o FILE`` replaces only an earlier report of this tool: any other file is the user's."""
    if not output.parent.is_dir():
        raise RunFolderError(f"cannot write {shown(output)}: no such folder {shown(output.parent)}")
    if output.is_dir() or (output.exists() and not output.is_file()):
        raise RunFolderError(f"cannot write {shown(output)}: it is not a file; give FILE.html")
    if output.is_file() and output.stat().st_size:
        with output.open("rb") as f:
            head = f.read(512)
        if b"<title>ditsr-plan report" not in head:
            raise RunFolderError(
                f"{shown(output)} exists and is not a ditsr-plan report: it is left as it is; give another -o"
            )


def write_report(run_dir: Path, output: Path | None = None) -> Path:
    if not (run_dir / "plan.json").is_file():
        raise FileNotFoundError(not_a_run(run_dir))
    output = output or run_dir / "report.html"
    _check_output(output)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(build_report(run_dir), encoding="utf-8")
    tmp.replace(output)  # a report cut short by a kill never replaces the previous one
    return output
