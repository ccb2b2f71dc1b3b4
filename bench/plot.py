"""The report's figure, report.png: per device, batch-1 latency (log axis, in plain
milliseconds) against test F1, the device's Pareto frontier, and every point labelled
where it can be read (inside the plotting area, off other labels and markers).

matplotlib is imported inside the functions: bench.report imports this module, and every
row's process re-imports bench.report, so a module-level import would add matplotlib to
every row's peak memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from bench.render import device_rows, device_title

if TYPE_CHECKING:  # annotations only: see the module notes
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

DPI = 120  # of the figure and of the saved PNG alike, so pixels placed are pixels saved


def plot(result: dict, path: Path) -> None:
    """The result's figure (one panel per device) saved as a PNG at `path`."""
    import matplotlib.pyplot as plt

    figure = draw([(device_title(device, result["threads"]), device_rows(result, device),
                    device["pareto"]) for device in result["devices"]])
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def draw(panels: list[tuple[str, list[dict], list[str]]]) -> Figure:
    """The report's figure: one panel per device (title, rows, frontier), each latency (log
    axis, plain milliseconds) against F1 with its Pareto frontier and every point labelled
    inside the plotting area. Devices get panels of their own: a GPU's and a CPU's
    latencies lie decades apart, and each device is its own choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, grid = plt.subplots(1, len(panels), figsize=(10 * len(panels), 6.5), dpi=DPI,
                                squeeze=False)
    for axes, (title, rows, frontier) in zip(grid[0], panels, strict=True):
        for row in rows:
            marker, colour = ("s", "tab:grey") if row["is_peer"] else (
                ("o", "tab:blue") if row["precision"] == "int8" else ("^", "tab:orange"))
            axes.scatter(row["p50_ms"], 100 * row["test_f1"], marker=marker, color=colour,
                         edgecolors="black" if row["name"] in frontier else "none", s=60,
                         zorder=3)
        front = [r for name in frontier for r in rows if r["name"] == name]
        axes.plot([r["p50_ms"] for r in front], [100 * r["test_f1"] for r in front], "--",
                  color="tab:green", label="Pareto frontier", zorder=2)
        axes.set_xscale("log")
        axes.margins(x=0.06, y=0.08)  # room for the end markers, and labels beside them
        plain_milliseconds(axes)
        axes.set_xlabel("batch-1 p50 latency (ms)")
        axes.set_ylabel("test entity F1 (%)")
        axes.set_title(f"{title}\nlatency against F1 (text in, entities out; log axis)")
        axes.grid(True, which="both", alpha=0.3)
    for marker, colour, label in (("^", "tab:orange", "FP32 / FP16"), ("o", "tab:blue", "INT8"),
                                  ("s", "tab:grey", "peer (from the teacher)")):
        grid[0][0].scatter([], [], marker=marker, color=colour, label=label)
    grid[0][0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, frameon=False)
    figure.tight_layout()
    # After the layout: placing labels works in pixels, which the layout would move.
    for axes, (_, rows, _) in zip(grid[0], panels, strict=True):
        place_labels(axes, [(r["name"], r["p50_ms"], 100 * r["test_f1"]) for r in rows])
    return figure


def plain_milliseconds(axes: Axes) -> None:
    """Label the log latency axis in plain numbers ("0.5", "2", "10"), not matplotlib's
    default 10^k and its 3 x 10^0 minor labels, which a reader has to decode."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    low, high = axes.get_xlim()  # settles autoscaling; fixed below so ticks stay put
    axes.set_xlim(low, high)
    axes.xaxis.set_major_locator(FixedLocator(log_ticks(low, high)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_ms(value)))
    axes.xaxis.set_minor_locator(LogLocator(subs="auto"))
    axes.xaxis.set_minor_formatter(NullFormatter())


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks at 1, 2 and 5 times each power of ten within [low, high] (only the powers
    over more than three decades, where those would crowd); on a range too short for three
    of them, at every whole multiple; at the ends if even those miss it."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = ((1,),) if math.log10(high / low) > 3 else ((1, 2, 5), range(1, 10))
    ticks: list[float] = []
    for multiples in steps:
        ticks = [m * 10.0**e for e in range(first, last + 1) for m in multiples
                 if low <= m * 10.0**e <= high]
        if len(ticks) >= 3:
            return ticks
    return ticks if len(ticks) >= 2 else [low, high]


def format_ms(value: float) -> str:
    """0.05 -> "0.05", 2.5 -> "2.5", 150 -> "150", 1200 -> "1200": never an exponent."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


# Where a point's label may go, in points from the marker, tried in order: right above,
# right below, left above, left below, then the same a line (9 pt) further out each time.
# Six lines each way: a crowd in a corner of the plot (the fast INT8 variants of one
# model, say) has labels on one side only, stacked.
LABEL_OFFSETS = [offset for line in range(6)
                 for offset in ((5, 3 + 9 * line), (5, -10 - 9 * line),
                                (-5, 3 + 9 * line), (-5, -10 - 9 * line))]
NEAR_OFFSETS = 4  # the first places touch the marker; from the fifth a line is drawn
MARKER_RADIUS_PT = 4  # the scatter's s=60 (area in pt^2) is a marker about 8 pt across


def place_labels(axes: Axes, points: list[tuple[str, float, float]]) -> list[Annotation]:
    """Label each (name, x, y) beside its marker at the first offset where the label stays
    inside the plotting area and covers no other label and no marker: rows of one model
    sit close together, a label drawn over another label or point cannot be read, and a
    label past the figure's edge is cut off. Where no place inside is clear of both, the
    first inside clear of labels; else the first inside; where none is inside (a name
    wider than the room on either side), the first, pushed inside. Returns the labels."""
    from matplotlib.transforms import Bbox

    renderer = axes.figure.canvas.get_renderer()
    axes.get_xlim()  # settles pending autoscaling, so the pixel positions below are final
    area = axes.get_window_extent(renderer)
    radius = MARKER_RADIUS_PT * axes.figure.dpi / 72
    markers = [Bbox.from_extents(px - radius, py - radius, px + radius, py + radius)
               for px, py in axes.transData.transform([(x, y) for _, x, y in points])]
    placed, annotations = [], []
    for name, x, y in points:
        # A leader line ties a label pushed to the outer places back to its point.
        label = axes.annotate(name, (x, y), fontsize=7, textcoords="offset points",
                              xytext=LABEL_OFFSETS[0],
                              arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.5,
                                          "shrinkA": 1, "shrinkB": radius})
        boxes = {offset: label_box(label, offset, renderer) for offset in LABEL_OFFSETS}
        inside = [offset for offset, box in boxes.items() if within(box, area)]
        clear_of_labels = [offset for offset in inside
                           if not any(boxes[offset].overlaps(other) for other in placed)]
        clear_of_all = [offset for offset in clear_of_labels
                        if not any(boxes[offset].overlaps(m) for m in markers)]
        chosen = (clear_of_all or clear_of_labels or inside or LABEL_OFFSETS)[0]
        box = label_box(label, chosen, renderer)
        if not within(box, area):
            box = push_inside(label, box, area, renderer)
        label.arrow_patch.set_visible(tuple(label.get_position())
                                      not in LABEL_OFFSETS[:NEAR_OFFSETS])
        placed.append(box)
        annotations.append(label)
    return annotations


def within(box: Bbox, area: Bbox) -> bool:
    return (box.x0 >= area.x0 and box.x1 <= area.x1 and box.y0 >= area.y0
            and box.y1 <= area.y1)


def push_inside(label: Annotation, box: Bbox, area: Bbox, renderer: RendererBase) -> Bbox:
    """Shift `label` (its offset, keeping its alignment) by the least that brings its box
    inside `area`, or against the area's left or bottom edge if it is larger still.
    Returns the new box."""
    from matplotlib.text import Text

    dx = max(area.x0 - box.x0, min(0.0, area.x1 - box.x1))
    dy = max(area.y0 - box.y0, min(0.0, area.y1 - box.y1))
    points_per_pixel = 72 / label.figure.dpi
    x, y = label.get_position()
    label.set_position((x + dx * points_per_pixel, y + dy * points_per_pixel))
    label.update_positions(renderer)
    return Text.get_window_extent(label, renderer)


def label_box(label: Annotation, offset: tuple[int, int], renderer: RendererBase) -> Bbox:
    """Move `label` to `offset` (points from its marker; text to the left for a negative
    dx) and return its text's box on the canvas (without the leader line)."""
    from matplotlib.text import Text

    label.set_position(offset)
    label.set_horizontalalignment("left" if offset[0] > 0 else "right")
    label.update_positions(renderer)  # what Annotation.get_window_extent does first
    return Text.get_window_extent(label, renderer)
