"""Weights over the steps with the stages as bands (matplotlib, imported only here).

``path`` is a file name, whose suffix picks the format (.png, .svg, .pdf, .jpg), or a binary file object (PNG).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import IO, TYPE_CHECKING

from .graph import Knob, ScheduleGraph

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Target = str | os.PathLike[str] | IO[bytes]


def _curve(knob: Knob) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for piece in knob.pieces:
        n = 64 if piece.shape == "cosine" else 1
        for i in range(n + 1):
            step = piece.start + (piece.end - piece.start) * i / n
            xs.append(step)
            ys.append(piece.v1 if i == n else piece.at(step))
    return xs, ys


def _axes(graph: ScheduleGraph, title: str) -> tuple[Figure, Axes, Axes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_w, ax_lr) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(3, 1))
    for i, stage in enumerate(graph.stages):
        for ax in (ax_w, ax_lr):
            ax.axvspan(stage.start, stage.end, color="0.9" if i % 2 else "0.97", zorder=0)
        ax_w.text(
            (stage.start + stage.end) / 2,
            1.01,
            stage.name,
            transform=ax_w.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax_w.set_ylabel("weight")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_w.set_title(title, pad=18)
    return fig, ax_w, ax_lr


def _draw(
    ax_w: Axes,
    ax_lr: Axes,
    graph: ScheduleGraph,
    names: Iterable[str],
    style: str,
    label_suffix: str = "",
    colors: Mapping[str, str] | None = None,
) -> dict[str, str]:
    colors = dict(colors or {})
    for name in names:
        knob = graph.knobs.get(name)
        if knob is None:
            continue
        ax = ax_w if name in graph.terms else ax_lr
        xs, ys = _curve(knob)
        (line,) = ax.plot(xs, ys, style, label=name + label_suffix, color=colors.get(name), linewidth=1.6)
        colors[name] = str(line.get_color())
    return colors


FIGURE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")


def figure_format(path: Target) -> str:
    """The image format a ``--plot`` file's suffix asks for (a file object gets PNG); ValueError otherwise."""
    if not isinstance(path, str | os.PathLike):
        return "png"
    suffix = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise ValueError(
            f"cannot draw '{os.fspath(path)}': the file's suffix must name a format: "
            + ", ".join(f".{f}" for f in FIGURE_FORMATS)
        )
    return suffix


def _finish(fig: Figure, ax_w: Axes, ax_lr: Axes, path: Target) -> None:
    ax_w.legend(loc="upper left", fontsize=8, ncol=max(1, math.ceil(len(ax_w.lines) / 8)))
    if ax_lr.lines:
        ax_lr.legend(loc="upper left", fontsize=8)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    fig.tight_layout()
    fig.savefig(path, dpi=110, format=figure_format(path))
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_schedule(graph: ScheduleGraph, path: Target) -> None:
    fig, ax_w, ax_lr = _axes(graph, f"{graph.name} ({graph.hash})")
    _draw(ax_w, ax_lr, graph, graph.knobs, "-")
    _finish(fig, ax_w, ax_lr, path)


def plot_diff(a: ScheduleGraph, b: ScheduleGraph, names: list[str], path: Target) -> None:
    """The knobs that differ: ``a`` solid, ``b`` dashed, in the same colour."""
    longer = a if a.total_steps >= b.total_steps else b
    fig, ax_w, ax_lr = _axes(longer, f"{a.name} (solid) vs {b.name} (dashed)")
    colors = _draw(ax_w, ax_lr, a, names, "-", f" ({a.name})")
    _draw(ax_w, ax_lr, b, names, "--", f" ({b.name})", colors)
    _finish(fig, ax_w, ax_lr, path)
