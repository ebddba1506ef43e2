"""The report's HTML: one self-contained page (inline SVG plots and CSS, no
script, nothing fetched), readable straight from the file system.

>>> "<table>" in table(["a"], [[1]]) and "&lt;b&gt;" in table(["x"], [["<b>"]])
True
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from . import figures
from .data import DRIFT_KINDS, ReportData

__all__ = ["render", "table"]

#: Versions compared per drifted feature (the alerted ones and the champion).
_MAX_HISTOGRAM_ROWS = 3

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
     padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em;max-width:100%}
td,th{padding:3px 10px;text-align:left;vertical-align:top}
.wrap{overflow-wrap:anywhere} .nowrap{white-space:nowrap}
tr:nth-child(even){background:#f4f4f4} th{background:#e8e8e8}
.figure{margin:.5em 0;max-width:100%;overflow:hidden} .figure svg{display:block;max-width:100%}
.drifted{color:#b00020;font-weight:bold} .muted{color:#777} code{background:#f2f2f2;padding:0 3px}
pre{background:#f6f6f6;padding:1em;overflow-x:auto}
"""


def _esc(value: Any) -> str:
    return html.escape("-" if value is None else str(value))


def format_number(value: Any, digits: int = 4) -> str:
    """A value for a table or a terminal line: ``-`` for none, floats to
    ``digits`` significant digits.

    >>> format_number(0.123456), format_number(None), format_number(3)
    ('0.1235', '-', '3')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw``."""
    cell = (lambda v: str(v)) if raw else _esc
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(svg: str, caption: str) -> str:
    return f'<div class="figure" role="img" aria-label="{_esc(caption)}">{svg}</div>'


def _summary(data: ReportData) -> str:
    versions = sorted({s.model_version for s in data.snapshots} | {v.version for v in data.versions})
    drifted = data.drifted_features
    kinds: dict[str, int] = {}
    for alert in data.alerts:
        kinds[alert.kind] = kinds.get(alert.kind, 0) + 1
    promotions = [e for e in data.model_events if e.event == "promoted"]
    period = (f"from {_when(data.since)}" if data.since is not None else "from the beginning of the topics")
    items = [
        f"Period: {period} to {_when(max((r.timestamp for r in data.snapshots + data.alerts), default=None))}.",
        f"Versions: {', '.join(f'v{v}' for v in versions) or 'none'}; champion now: "
        f"{('v' + str(data.champion)) if data.champion is not None else '-'}.",
        "Alerts: " + (", ".join(f"{k} &times; {n}" for k, n in sorted(kinds.items())) or "none") + ".",
        f"Retrain requests: {len(data.requests)}; promotions: "
        + (", ".join(f"v{e.version} at {_when(e.timestamp)}" for e in promotions) or "none") + ".",
        "Drifted features: " + (", ".join(f'<span class="drifted">{_esc(f)}</span>' for f in drifted)
                                or "none") + ".",
    ]
    if data.skipped:
        items.append(f"{data.skipped} message(s) on the topics broke the event contract and were skipped.")
    if data.read_timed_out:
        items.append("The topics were still delivering when reading stopped: the newest records may be missing.")
    if data.registry_error:
        items.append(f"Registry: {_esc(data.registry_error)}.")
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _drift_table(data: ReportData) -> str:
    drifted = set(data.drifted_features)
    rows = []
    for version in sorted({s.model_version for s in data.snapshots}):
        snap = data.latest_snapshot(version)
        for name, entry in sorted(((snap.stats or {}).get("drift") or {}).items()):
            alerts = [a for a in data.alerts if a.kind == "data_drift" and a.subject == name
                      and a.model_version == version]
            flag = '<span class="drifted">drifted</span>' if alerts else ""
            rows.append([f"v{version}", _esc(name) if name not in drifted else f'<b>{_esc(name)}</b>',
                         _esc(entry.get("kind")), format_number(entry.get("statistic")), format_number(entry.get("threshold")),
                         format_number(entry.get("p_value"), 3), _esc(entry.get("missing")), _esc(entry.get("outliers")),
                         str(len(alerts)), flag])
    if not rows:
        return '<p class="muted">No per-feature drift statistics in the snapshots.</p>'
    return table(["version", "feature", "kind", "statistic (last window)", "threshold", "p-value", "missing",
                  "outliers", "drift alerts", ""], rows, raw=True)


def _histograms(data: ReportData) -> str:
    drifted = data.drifted_features
    if not drifted:
        return '<p class="muted">No feature drifted in the period.</p>'
    parts = []
    for feature in drifted:
        versions = [a.model_version for a in data.alerts if a.kind == "data_drift" and a.subject == feature]
        if data.champion is not None:
            versions.append(data.champion)
        shown = list(dict.fromkeys(versions))[-_MAX_HISTOGRAM_ROWS:]
        parts.append(f"<h3>{_esc(feature)}</h3>"
                     + _figure(figures.histograms_figure(data, feature, shown),
                               f"{feature}: reference profile and recent window"))
    return "".join(parts)


def _labels_table(data: ReportData) -> str:
    rows = []
    for version in sorted({s.model_version for s in data.snapshots}):
        stats = data.latest_snapshot(version).stats or {}
        rows.append([f"v{version}", _esc(stats.get("predictions")), _esc(stats.get("joined")),
                     _esc(stats.get("expired")), format_number(stats.get("label_coverage")),
                     format_number(stats.get("label_delay_p50_s")), format_number(stats.get("latency_p95_ms"))])
    return table(["version", "predictions", "joined", "expired", "label coverage", "label delay p50 (s)",
                  "latency p95 (ms)"], rows, raw=True) if rows else ""


def _estimation_table(data: ReportData) -> str:
    """Estimated metrics (no labels needed) beside the realized rolling
    ones, and the gap between the two per completed window."""
    rows = []
    for version in sorted({s.model_version for s in data.snapshots}):
        snap = data.latest_snapshot(version)
        stats = snap.stats or {}
        estimated, gap = stats.get("estimated") or {}, stats.get("estimation_gap") or {}
        if not estimated.get("n"):
            continue
        for metric in ("accuracy", "f1", "roc_auc", "mae", "rmse"):
            if estimated.get(metric) is None:
                continue
            low, high = (estimated.get(f"{metric}_ci") or [None, None])[:2]
            is_gap_metric = metric == gap.get("metric")
            rows.append([f"v{version}", _esc(estimated.get("method")), _esc(estimated.get("n")), _esc(metric),
                         format_number(estimated[metric]), f"{format_number(low)} – {format_number(high)}", format_number(snap.rolling.get(metric)),
                         format_number(gap.get("last")) if is_gap_metric else "", format_number(gap.get("mean_abs")) if is_gap_metric
                         else ""])
    if not rows:
        return '<p class="muted">No version has a calibrator (or estimator) yet: nothing estimated.</p>'
    return (table(["version", "method", "window", "metric", "estimated", "95% interval", "realized (rolling)",
                   "gap, last window", "mean |gap|"], rows, raw=True)
            + '<p class="muted">Estimated from the model\'s calibrated confidence before labels arrive; valid under '
              'covariate shift, blind to concept drift (a changed relation between inputs and labels). The gap is '
              'estimated minus realized, per completed window of joined pairs.</p>')


def _scores(metrics: dict[str, Any]) -> str:
    shown = [(k, v) for k, v in sorted(metrics.items()) if k.startswith(("candidate_", "champion_", "holdout_"))
             or k in figures.PRIMARY_METRICS]
    return ", ".join(f"{_esc(k)}={format_number(v)}" for k, v in shown) or "-"


def _short(value: Any, most: int = 40) -> str:
    text = format_number(value) if isinstance(value, float) else str(value)
    return text if len(text) <= most else text[:most - 1] + "\u2026"


def _lineage(lineage: dict[str, Any]) -> str:
    keys = ("parent_version", "trigger", "rows", "train_rows", "data_sha256", "window_start", "window_end")
    shown = [(k, lineage[k]) for k in keys if lineage.get(k) is not None]
    shown += [(k, v) for k, v in sorted(lineage.items()) if k not in keys and isinstance(v, (int, float, str))]
    return "<br>".join(f"{_esc(k)}: {_esc(_short(v))}" for k, v in shown[:8]) or "-"


def _versions_table(data: ReportData) -> str:
    if not data.versions:
        return '<p class="muted">No versions in the registry.</p>'
    rows = [[f"<b>v{v.version}</b>", _esc(v.status), _esc(", ".join(v.aliases) or "-"),
             f'<span class="nowrap">{_when(v.created_at)}</span>', f'<span class="wrap">{_lineage(v.lineage)}</span>',
             f'<span class="wrap">{_esc(v.request_id)}</span>', f'<span class="wrap">{_scores(v.metrics)}</span>',
             f'<span class="wrap">{_esc(v.reason)}</span>']
            for v in data.versions]
    return table(["version", "status", "aliases", "registered", "lineage", "retrain request", "scores",
                  "reason"], rows, raw=True)


def _timeline(data: ReportData) -> str:
    rows: list[tuple[float, str, str]] = []
    for a in data.alerts:
        rows.append((a.timestamp, f"alert {a.kind}" + (" (drift)" if a.kind in DRIFT_KINDS else ""),
                     f"v{a.model_version} {a.subject} [{a.detector}] value={format_number(a.value)} "
                     f"threshold={format_number(a.threshold)}: {a.message}"))
    for r in data.requests:
        rows.append((r.timestamp, "retrain request", f"{r.reason} (v{r.model_version}): {r.message or ''}"))
    for e in data.model_events:
        scores = _scores(e.metrics or {})
        rows.append((e.timestamp, f"model {e.event}", (f"v{e.version}" if e.version is not None else "")
                     + (f" alias {e.alias}" if e.alias else "") + (f" [{scores}]" if scores != "-" else "")
                     + (f" ({e.reason})" if e.reason else "")))
    rows.sort(key=lambda r: r[0])
    if not rows:
        return '<p class="muted">Nothing happened in the period.</p>'
    return table(["time", "what", "details"], [(f'<span class="nowrap">{_when(t)}</span>', _esc(what),
                                                 f'<span class="wrap">{_esc(text)}</span>') for t, what, text in rows],
                 raw=True)


def render(data: ReportData, title: str | None = None, extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """The whole page. ``extra_sections`` are ``(title, html)`` pairs
    appended at the end (the demo adds its ground truth and timings)."""
    title = title or f"Driftline report: {data.model}"
    sections = [
        ("Summary", _summary(data)),
        ("Metrics over time", _figure(figures.metrics_figure(data), "metrics over time per version")
         + '<p class="muted">Solid: rolling window; dash-dot: cumulative; dotted: estimated without labels. Green: promotions; red dashed: drift '
           'alerts; purple dotted: retrain requests.</p>'),
        ("Drift statistics per feature", _figure(figures.drift_statistics_figure(data),
                                                 "drift statistic per feature against its threshold")
         + _drift_table(data)),
        ("Reference profile against the recent window", _histograms(data)),
        ("Estimated performance", _estimation_table(data)),
        ("Labels", _figure(figures.labels_figure(data), "label coverage and delay") + _labels_table(data)),
        ("Versions", _versions_table(data)),
        ("Timeline", _timeline(data)),
        *extra_sections,
    ]
    body = "".join(f"<h2>{_esc(name)}</h2>{content}" for name, content in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1><p class=\"muted\">Generated {_when(_now())} from the metrics, alerts, "
            f"retrain-requests and model-events topics and the registry.</p>{body}</body></html>\n")


def _now() -> float:
    import time

    return time.time()


def pretty_json(value: Any) -> str:
    """``<pre>`` of a JSON value (for extra sections)."""
    return f"<pre>{_esc(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>"
