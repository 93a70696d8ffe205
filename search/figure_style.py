"""One look for every figure the product and its benchmarks draw: sized for a README (800 px
wide), accuracy in percent, linear axes unless a labelled log axis is needed, legends where
there are lines, labels that do not overlap.

Light on purpose (matplotlib only): the CLI imports the front's plotting at start-up.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

DPI = 100
WIDTH = 8.0  # inches: 800 px at DPI, the width a README shows
RC = {
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
    "ytick.labelsize": 9, "legend.fontsize": 8.5, "figure.titlesize": 11,
    "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6,
    "legend.frameon": False, "lines.linewidth": 1.6, "lines.markersize": 4,
    "figure.dpi": DPI, "savefig.dpi": DPI,
}
# one colour per role, so the same thing looks the same in every figure
COLOURS = {"measured": "tab:blue", "front": "tab:red", "other": "tab:gray", "claim": "black",
           "budget": "tab:purple", "pick": "gold", "reference": "0.55"}

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    with plt.rc_context(RC):
        yield


def styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Draw under the shared style (fonts and sizes apply to what is created inside)."""
    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with figure_style():
            return draw(*args, **kwargs)
    return wrapper


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` to `path` as a PNG at DPI and close it. One draw lays out and renders:
    `savefig` draws twice with a layout engine (once only to lay out), for the same bytes.
    Every trial that ends draws its evidence, so a second draw would cost search time."""
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"{path}: figures are written as PNG; name the file .png")
    fig.set_dpi(DPI)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    matplotlib.image.imsave(path, canvas.buffer_rgba(), format="png", dpi=DPI)
    plt.close(fig)
    return path


def cap_at_100(ax: Axes) -> None:
    """Percent axes stop just above 100: matplotlib pads a flat 100% line up to 105."""
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, min(top, 100.5))


def percent(value: float, _position: object = None) -> str:
    """A value already in percent as a tick: 92 -> '92%', 92.5 -> '92.5%'."""
    return f"{round(value, 6):g}%"


def percent_axis(ax: Axes, axis: str = "y") -> None:
    """Ticks of values already in percent read '92%' (the axis label then needs no unit)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(percent))
    if axis == "y":
        cap_at_100(ax)


def short_count(value: float, _position: object = None) -> str:
    """5,000 -> '5k', 1,333,770 -> '1.3M': tick labels that fit and read at a glance."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def log_count_axis(ax: Axes, axis: str = "x") -> None:
    """A log axis for counts spanning decades, with plain ticks (5k 10k 20k) in one format,
    fewer per decade the more decades it spans. Call it after drawing; the caller's label
    should say 'log'."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
    decades = math.log10(high / low)
    subs = (1.0, 2.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 2.5 else (1.0,)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(short_count))
    target.set_minor_formatter(NullFormatter())


OFFSETS = ((6, 5), (6, -11), (-6, 5), (-6, -11), (0, 10), (0, -15), (12, 0), (-12, 0), (10, 14),
           (-10, 14), (10, -20), (-10, -20))


def label_points(ax: Axes, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                 avoid: Sequence[tuple[float, float]] = (),
                 avoid_lines: Sequence[Sequence[tuple[float, float]]] = (), **text_kw: object) -> list:
    """Label each point beside it, trying offsets until the label covers no earlier label, no
    other point (labelled, or in `avoid`) and no line of `avoid_lines` (polylines in data
    coordinates); a label with no free place is left out (its point still shows). Returns
    the labels placed."""
    fig = ax.figure
    fig.canvas.draw()  # text extents need a renderer and final limits
    renderer = fig.canvas.get_renderer()
    points = ax.transData.transform(list(zip(xs, ys, strict=True)))
    obstacles = [*(ax.transData.transform(list(avoid)) if len(avoid) else []),
                 *(q for line in avoid_lines for q in _along(ax.transData.transform(list(line))))]
    frame = ax.get_window_extent(renderer)
    placed: list = []
    boxes: list = []
    for i, ((x, y), text) in enumerate(zip(zip(xs, ys, strict=True), texts, strict=True)):
        own = points[i]
        for dx, dy in OFFSETS:
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy),
                                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                va="bottom" if dy >= 0 else "top", **text_kw)
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            hits_point = any(box.contains(px, py) for j, (px, py) in enumerate(points) if j != i)
            # a label may touch its own point (and the line through it), not anything else
            hits_obstacle = any(box.contains(ox, oy) and math.dist((ox, oy), own) > 4 for ox, oy in obstacles)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not hits_point and not hits_obstacle and not any(box.overlaps(b) for b in boxes):
                placed.append(label)
                boxes.append(box)
                break
            label.remove()
    return placed


def _along(vertices: Sequence[Sequence[float]], step: float = 3.0) -> list[tuple[float, float]]:
    """Points every `step` display pixels along a polyline, so a label box can test for it."""
    out: list[tuple[float, float]] = []
    for (x0, y0), (x1, y1) in zip(vertices[:-1], vertices[1:], strict=True):
        n = max(1, int(math.dist((x0, y0), (x1, y1)) / step))
        out += [(x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(n + 1)]
    return out
