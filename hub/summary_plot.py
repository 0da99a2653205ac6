"""The summary's plot: median pain with its interquartile range at each time point.

The only matplotlib import of the collector (the ``report`` extra); headless
(Agg backend), written to a PNG or SVG file.
"""

from __future__ import annotations

from pathlib import Path

from .summary import Summary

__all__ = ["write_plot"]


def write_plot(summary: Summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary.pain if r.median.value is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    try:
        xs = list(range(len(rows)))
        med = [r.median.value or 0.0 for r in rows]  # rows without a median are left out above
        lo = [(r.median.value or 0.0) - (r.q1.value or 0.0) for r in rows]
        hi = [(r.q3.value or 0.0) - (r.median.value or 0.0) for r in rows]
        ax.errorbar(xs, med, yerr=[lo, hi], fmt="o-", capsize=4, color="#1f5fa0")
        for x, r in zip(xs, rows, strict=True):
            ax.annotate(f"n={r.n}", (x, med[x]), textcoords="offset points", xytext=(6, 6))
        ax.set_xticks(xs, [r.time_point for r in rows])
        ax.set_ylabel(f"Pain ({summary.scale}): median, IQR")
        ax.set_xlabel("time point")
        ax.set_title(f"{summary.study}: pain by time point")
        ax.set_ylim(bottom=0)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
