"""The report's plots, drawn with matplotlib and returned as inline SVG.

Every legend sits below its axes (never beside them), and the saved figure
is cropped to what was drawn, so nothing overflows the page.
"""

from __future__ import annotations

import io
import math
import re
from datetime import datetime, timezone

from ..extras import require
from .data import DRIFT_KINDS, ReportData

__all__ = ["metrics_figure", "drift_statistics_figure", "histograms_figure", "labels_figure", "PRIMARY_METRICS"]

#: Metrics plotted over time, in this order, when the snapshots carry them.
PRIMARY_METRICS = ("accuracy", "f1", "roc_auc", "log_loss", "mae", "rmse", "r2")
_MAX_METRIC_PANELS = 3
_PROMOTIONS = ("promoted", "rolled_back")


def _pyplot():
    matplotlib = require("matplotlib", "report", "the HTML report (driftline report, driftline demo)")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _svg(figure) -> str:
    """The figure as an ``<svg>`` element (no XML prolog, text kept as text)."""
    plt = _pyplot()
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "driftline-report"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    start = text.find("<svg")
    # Scale with the page: drop the fixed size, keep the viewBox.
    head, rest = text[start:].split(">", 1)
    head = re.sub(r'\s(width|height)="[^"]*"', "", head)
    return f'{head} style="width:100%;height:auto">{rest}'


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _time_axis(ax) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(tz=timezone.utc, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
    ax.grid(True, alpha=0.3)


def _legend_below(figure, axes: list, ncol: int = 4) -> None:
    """One legend for the figure, centred under the axes."""
    handles, labels, seen = [], [], set()
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in seen and not label.startswith("_"):
                seen.add(label)
                handles.append(handle)
                labels.append(label)
    if handles:
        figure.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(ncol, len(labels)),
                      fontsize=8, frameon=False)


def _events(ax, data: ReportData, label: bool = True) -> None:
    """Vertical marks: promotions (with the version), drift alerts, retrain requests."""
    first = {"promotion": label, "drift alert": label, "retrain request": label}

    def tag(name: str) -> str:
        if first[name]:
            first[name] = False
            return name
        return "_" + name

    for event in data.model_events:
        if event.event in _PROMOTIONS:
            ax.axvline(_when(event.timestamp), color="tab:green", linewidth=1.5, label=tag("promotion"))
            ax.annotate(f"v{event.version}" + (" (rollback)" if event.event == "rolled_back" else ""),
                        (_when(event.timestamp), 1.0), xycoords=("data", "axes fraction"), xytext=(3, -11),
                        textcoords="offset points", color="tab:green", fontsize=8)
    for alert in data.alerts:
        if alert.kind in DRIFT_KINDS:
            ax.axvline(_when(alert.timestamp), color="tab:red", linestyle="--", linewidth=0.9, alpha=0.8,
                       label=tag("drift alert"))
    for request in data.requests:
        ax.axvline(_when(request.timestamp), color="tab:purple", linestyle=":", linewidth=1.5,
                   label=tag("retrain request"))


def _versions(data: ReportData) -> list[int]:
    return sorted({s.model_version for s in data.snapshots})


def _colour(version: int) -> str:
    palette = ("tab:blue", "tab:orange", "tab:cyan", "tab:brown", "tab:pink", "tab:olive", "tab:gray")
    return palette[(version - 1) % len(palette)]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def metric_names(data: ReportData) -> list[str]:
    present = {k for s in data.snapshots for k, v in {**s.rolling, **s.cumulative}.items() if v is not None}
    return [m for m in PRIMARY_METRICS if m in present][:_MAX_METRIC_PANELS]


def metrics_figure(data: ReportData) -> str:
    """Rolling (solid), cumulative (thin) and estimated (dotted, before
    labels) metrics per version over time."""
    plt = _pyplot()
    names = metric_names(data) or ["accuracy"]
    figure, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names)), sharex=True, squeeze=False)
    axes = [row[0] for row in axes]
    for ax, name in zip(axes, names):
        for version in _versions(data):
            snaps = [s for s in data.snapshots if s.model_version == version]
            for window, style in (("rolling", {"linewidth": 1.8}), ("cumulative", {"linewidth": 0.8,
                                                                                   "linestyle": "-."})):
                points = [(_when(s.timestamp), getattr(s, window).get(name)) for s in snaps
                          if getattr(s, window).get(name) is not None]
                if points:
                    ax.plot(*zip(*points), color=_colour(version), label=f"v{version} {window}", **style)
            estimated = [(_when(s.timestamp), ((s.stats or {}).get("estimated") or {}).get(name)) for s in snaps]
            estimated = [(when, value) for when, value in estimated if value is not None]
            if estimated:
                ax.plot(*zip(*estimated), color=_colour(version), label=f"v{version} estimated", linewidth=1.2,
                        linestyle=":")
        if not data.snapshots:
            _empty(ax, "no metrics snapshots in the period")
            continue
        _events(ax, data, label=ax is axes[0])
        ax.set_ylabel(name)
        _time_axis(ax)
    axes[0].set_title(f"{data.model}: metrics over time per version")
    figure.tight_layout()
    _legend_below(figure, axes, ncol=5)
    return _svg(figure)


def _drift_features(data: ReportData) -> list[str]:
    names: dict[str, None] = {}
    for snap in data.snapshots:
        for name in sorted((snap.stats or {}).get("drift") or {}):
            names.setdefault(name, None)
    drifted = data.drifted_features
    return drifted + [n for n in names if n not in drifted]


def drift_statistics_figure(data: ReportData) -> str:
    """Per feature: the last tested window's statistic per version, with its threshold."""
    plt = _pyplot()
    features = _drift_features(data)
    if not features:
        figure, ax = plt.subplots(figsize=(10, 1.5))
        _empty(ax, "no per-feature drift statistics in the snapshots")
        return _svg(figure)
    cols = min(3, len(features))
    rows = math.ceil(len(features) / cols)
    figure, grid = plt.subplots(rows, cols, figsize=(10, 2.2 * rows), sharex=True, squeeze=False)
    axes = [ax for row in grid for ax in row]
    drifted = set(data.drifted_features)
    for ax, name in zip(axes, features):
        for version in _versions(data):
            stat, limit = [], []
            for snap in data.snapshots:
                if snap.model_version != version:
                    continue
                entry = ((snap.stats or {}).get("drift") or {}).get(name) or {}
                if entry.get("statistic") is not None:
                    stat.append((_when(snap.timestamp), entry["statistic"]))
                if entry.get("threshold") is not None:
                    limit.append((_when(snap.timestamp), entry["threshold"]))
            if stat:
                ax.plot(*zip(*stat), color=_colour(version), linewidth=1.4, label=f"v{version} statistic")
            if limit:
                ax.plot(*zip(*limit), color=_colour(version), linestyle="--", linewidth=0.9,
                        label=f"v{version} threshold")
        for alert in data.alerts:
            if alert.kind == "data_drift" and alert.subject == name:
                ax.plot([_when(alert.timestamp)], [alert.value], marker="v", color="tab:red", linestyle="none",
                        label="data-drift alert")
        ax.set_title(name + ("  (drifted)" if name in drifted else ""), fontsize=9,
                     color="tab:red" if name in drifted else "black")
        ax.tick_params(labelsize=7)
        _time_axis(ax)
    for ax in axes[len(features):]:
        ax.set_visible(False)
    figure.tight_layout()
    _legend_below(figure, axes, ncol=6)
    return _svg(figure)


def _reference_panel(ax, spec: dict | None, title: str) -> tuple[float, float] | None:
    if not spec:
        _empty(ax, "no reference profile")
        return None
    if spec.get("type") == "numeric":
        hist = spec.get("histogram") or {}
        edges, counts = hist.get("edges") or [], hist.get("counts") or []
        if not counts:
            _empty(ax, "empty reference")
            return None
        total = sum(counts) or 1
        ax.stairs([c / total for c in counts], edges, fill=True, color="tab:gray", alpha=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("share", fontsize=8)
        return edges[0], edges[-1]
    _bars(ax, spec.get("frequencies") or {}, "tab:gray")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("share", fontsize=8)
    return None


def _window_panel(ax, window: dict | None, title: str, colour: str) -> tuple[float, float] | None:
    if not window:
        _empty(ax, "no window tested yet")
        return None
    if "edges" in window:
        total = sum(window["counts"]) or 1
        ax.stairs([c / total for c in window["counts"]], window["edges"], fill=True, color=colour, alpha=0.6)
        ax.set_title(title, fontsize=9)
        return window["edges"][0], window["edges"][-1]
    _bars(ax, window.get("frequencies") or {}, colour)
    ax.set_title(title, fontsize=9)
    return None


def _bars(ax, shares: dict[str, float], colour: str) -> None:
    keys = list(shares)[:20]
    ax.bar(range(len(keys)), [shares[k] for k in keys], color=colour, alpha=0.7)
    ax.set_xticks(range(len(keys)), keys, rotation=45, fontsize=7)


def histograms_figure(data: ReportData, feature: str, versions: list[int]) -> str:
    """Reference profile (left) and the last tested window (right) of one
    feature, one row per version, on a shared x range."""
    plt = _pyplot()
    figure, grid = plt.subplots(len(versions), 2, figsize=(10, 2.4 * len(versions)), squeeze=False)
    for row, version in zip(grid, versions):
        info = data.version(version)
        spec = ((info.profile or {}).get("features") or {}).get(feature) if info else None
        snap = data.latest_snapshot(version)
        entry = (((snap.stats or {}).get("drift") or {}).get(feature) or {}) if snap else {}
        window = entry.get("window")
        when = _when(snap.timestamp).strftime("%H:%M:%S UTC") if snap else "-"
        shown = f", {window.get('n')} events" if window else ""
        ranges = [r for r in (_reference_panel(row[0], spec, f"v{version} reference profile"),
                              _window_panel(row[1], window, f"v{version} recent window (at {when}{shown})",
                                            _colour(version))) if r]
        if ranges:
            low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
            for ax in row:
                ax.set_xlim(low, high)
        for ax in row:
            ax.tick_params(labelsize=7)
    figure.suptitle(f"{feature}: reference against the recent window", fontsize=10)
    figure.tight_layout()
    return _svg(figure)


def labels_figure(data: ReportData) -> str:
    """Label coverage (share of settled predictions that got a label) and
    the median label delay, per version over time."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 2.8))
    for ax, key, name in ((axes[0], "label_coverage", "label coverage"),
                          (axes[1], "label_delay_p50_s", "label delay p50 (s)")):
        for version in _versions(data):
            points = [(_when(s.timestamp), (s.stats or {}).get(key)) for s in data.snapshots
                      if s.model_version == version and (s.stats or {}).get(key) is not None]
            if points:
                ax.plot(*zip(*points), color=_colour(version), label=f"v{version}")
        if not data.snapshots:
            _empty(ax, "no metrics snapshots in the period")
            continue
        _events(ax, data, label=ax is axes[0])
        ax.set_title(name, fontsize=9)
        _time_axis(ax)
    axes[0].set_ylim(-0.02, 1.05)
    figure.tight_layout()
    _legend_below(figure, list(axes), ncol=6)
    return _svg(figure)
