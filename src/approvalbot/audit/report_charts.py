"""SVG charts for the evidence report, drawn with matplotlib's SVG backend.

Why matplotlib rather than pygal: it is the most widely kept plotting library in Python
(NumFOCUS, releases every few months), its SVG backend needs no browser, JavaScript or
fonts at view time (text is drawn as paths with `svg.fonttype = "path"`), and with a
fixed `svg.hashsalt` and no date in the metadata its output is byte-for-byte repeatable,
which `verify-report` relies on when it re-renders a report from its signed data. pygal's
SVGs lean on embedded JavaScript for tooltips and CSS that browsers style differently
in print.

The charts are drawn from the report's data only (never from the records), so the same
data always gives the same picture.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import matplotlib

matplotlib.use("svg")  # no display, no GUI toolkit: the charts are strings of SVG

import matplotlib.pyplot as plt

from approvalbot.audit.evidence import OUTCOME_LABELS, OUTCOMES

COLOURS = {
    "approved": "#2e7d32",
    "denied": "#c62828",
    "expired": "#9e9e9e",
    "cancelled": "#6d4c41",
    "allowed_by_policy": "#81c784",
    "denied_by_policy": "#ef9a9a",
}
_RC: dict[Any, Any] = {
    "svg.hashsalt": "approvalbot-evidence",
    "svg.fonttype": "path",
    "font.size": 8,
    "figure.dpi": 72,
}
_lock = threading.Lock()  # pyplot's state is global


def _svg(fig: Any) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = out.getvalue()
    start = text.find("<svg")  # drop the XML prolog and DOCTYPE: the SVG is inlined in HTML
    return text[start:] if start >= 0 else text


def decisions_per_day(per_day: dict[str, dict[str, int]]) -> str:
    """Stacked bars: one per day, one colour per outcome."""
    days = sorted(per_day)
    with _lock, plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(9, 3))
        bottom = [0] * len(days)
        for outcome in OUTCOMES:
            heights = [per_day[d].get(outcome, 0) for d in days]
            if any(heights):
                ax.bar(range(len(days)), heights, bottom=bottom, color=COLOURS[outcome], label=OUTCOME_LABELS[outcome])
                bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ticks = list(range(0, len(days), max(1, len(days) // 12)))
        ax.set_xticks(ticks, [days[i] for i in ticks], rotation=30, ha="right")
        ax.set_ylabel("decisions")
        ax.set_title("Decisions per day by outcome")
        if days:
            ax.legend(loc="upper left", ncols=3, frameon=False)
        else:
            ax.text(0.5, 0.5, "no decisions in the period", ha="center", transform=ax.transAxes)
        return _svg(fig)


def time_to_decision(seconds: list[float], median_s: float | None, p95_s: float | None) -> str:
    """A histogram of minutes from request to a human's decision, the median and p95 as lines."""
    minutes = [s / 60 for s in seconds]
    with _lock, plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(9, 3))
        if minutes:
            ax.hist(minutes, bins=40, color="#5c6bc0")
            for value, label, style in ((median_s, "median", "-"), (p95_s, "95th percentile", "--")):
                if value is not None:
                    ax.axvline(value / 60, color="#000000", linestyle=style, label=f"{label}: {value / 60:.1f} min")
            ax.legend(frameon=False)
        else:
            ax.text(0.5, 0.5, "no human decisions in the period", ha="center", transform=ax.transAxes)
        ax.set_xlabel("minutes from request to decision")
        ax.set_ylabel("requests")
        ax.set_title("Time to decision")
        return _svg(fig)
