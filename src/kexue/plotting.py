"""One figure style for the whole book.

Figures have an opaque white background (legible in the theme's dark mode), a
readable font size at phone width, and a consistent palette. Use::

    from kexue import plotting
    fig, ax = plotting.figure()            # one panel
    fig, axes = plotting.figure(1, 2)      # two panels side by side
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl

#: Colour cycle (colour-blind-safe, after Okabe & Ito).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

STYLE: dict[str, Any] = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "lines.linewidth": 1.6,
    "figure.constrained_layout.use": True,
}

#: Width of one panel in inches; a two-panel figure is about a page column wide.
PANEL_WIDTH = 4.2
PANEL_HEIGHT = 3.1


def apply() -> None:
    """Make the book's style the matplotlib default for this process."""
    mpl.rcParams.update(STYLE)


def figure(nrows: int = 1, ncols: int = 1, *, width: float | None = None, height: float | None = None, **kwargs: Any):
    """A new figure in the book's style; returns ``(fig, ax)`` or ``(fig, axes)`` like ``plt.subplots``."""
    import matplotlib.pyplot as plt

    for name, value in (("nrows", nrows), ("ncols", ncols)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("width", width), ("height", height)):
        if value is not None and (not isinstance(value, (int, float)) or value <= 0):
            raise ValueError(f"{name} must be a positive number of inches, got {value!r}")
    apply()
    size = (width or min(PANEL_WIDTH * ncols, 9.0), height or PANEL_HEIGHT * nrows)
    return plt.subplots(nrows, ncols, figsize=size, **kwargs)


def reference_line(ax, value: float, *, axis: str = "y", label: str | None = None, **kwargs: Any):
    """A dashed grey horizontal (``axis='y'``) or vertical (``axis='x'``) line at ``value``."""
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    style = {"color": "0.35", "linestyle": "--", "linewidth": 1.0, "label": label} | kwargs
    return ax.axhline(value, **style) if axis == "y" else ax.axvline(value, **style)
