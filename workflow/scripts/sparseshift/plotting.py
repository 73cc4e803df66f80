"""What every figure shares: the method colours and names, empty panels, notes and saving.

Every ``plot_*`` function of the figure modules (:mod:`.arm_figures`, :mod:`.sweep_figures`,
:mod:`.run_figures`, :mod:`.enrichment`) is pure: it takes data frames / arrays and a list of
output paths, draws one figure and saves it to every path (dpi 150); most return a short note
naming what is missing ("" when nothing is). Missing methods, seeds, sweep values or columns
never raise: what is there is drawn, the rest is named in the note, and a figure with nothing
to draw says so in the figure itself. Method names and colours are the same in every figure.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from .methods import DISPLAY_NAMES, METHODS  # noqa: E402

PALETTE = dict(zip(DISPLAY_NAMES.values(), sns.color_palette("colorblind", len(METHODS))))
OTHER_COLOUR = "0.35"  # a key that is not one of the five methods


def display_name(method) -> str:
    """Display name of a method id (unknown ids as they are)."""
    return DISPLAY_NAMES.get(str(method), str(method))


def colour_of(method):
    return PALETTE.get(display_name(method), OTHER_COLOUR)


def method_order(methods) -> list[str]:
    """Method ids present, in the paper's order, then any other ids as given."""
    present = list(dict.fromkeys(str(m) for m in methods))
    return [m for m in METHODS if m in present] + [m for m in present if m not in METHODS]


def names_of(methods) -> str:
    return ", ".join(display_name(m) for m in methods)


def join_notes(parts) -> str:
    return "; ".join(p for p in parts if p)


def empty_panel(ax, text: str) -> None:
    """An empty panel that says why."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, color="0.3", wrap=True,
            transform=ax.transAxes)
    ax.set_axis_off()


def empty_panels(axes, text: str) -> None:
    """Every panel empty: the reason once, in the middle one."""
    axes = list(np.ravel(axes))
    for ax in axes:
        ax.set_axis_off()
    empty_panel(axes[len(axes) // 2], text)


def save_figure(fig, paths) -> None:
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
