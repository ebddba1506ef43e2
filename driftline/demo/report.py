"""The demo's summary (printed) and its HTML report: the operator report of
:mod:`driftline.report` followed by what only the demo knows."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from ..report import gather
from ..report import write_report as write_model_report
from ..report.page import pretty_json, table
from .stream import AFTER_FUNCTION, BEFORE_FUNCTION, DEMO_MODEL, DEMO_POLICY
from .view import View, fmt
from .watch import Watcher

__all__ = ["DemoResult", "summarise", "print_summary", "write_report"]


@dataclass
class DemoResult:
    timings: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float | None] = field(default_factory=dict)
    alert_delay_events: int | None = None
    promoted_version: int | None = None
    events_sent: int = 0
    metrics_scraped: dict[str, dict[str, float]] = field(default_factory=dict)
    ok: bool = False
    problem: str | None = None


def _accuracy(truth: list, start: int, end: int | None, version: int | None = None) -> float | None:
    rows = [c for _, i, v, c in truth if i >= start and (end is None or i < end) and (version is None or v == version)]
    return round(sum(rows) / len(rows), 4) if rows else None


def summarise(result: DemoResult, watcher: Watcher, truth: list, drift_at: int, drift_t: float | None,
               promoted_at_event: int | None, final_version: int) -> None:
    t = result.timings
    after = drift_t or 0.0
    alert = watcher.first("alert", after)
    request = watcher.first("request", after)
    promoted = watcher.first("promoted", after)
    if alert:
        t["first_alert"] = round(alert.t, 2)
        t["alert_delay_s"] = round(alert.t - after, 2)
        result.alert_delay_events = sum(1 for ts, i, *_ in truth if i >= drift_at and ts <= alert.t)
    if request:
        t["retrain_request"] = round(request.t, 2)
    if promoted:
        t["promoted"] = round(promoted.t, 2)
        t["drift_to_promotion_s"] = round(promoted.t - after, 2)
        result.promoted_version = promoted.data["event"]["version"]
    result.accuracy = {
        "v1_before_drift": _accuracy(truth, 500, drift_at),
        "v1_after_drift": _accuracy(truth, drift_at, promoted_at_event, version=1),
        f"v{final_version}_after_promotion": (_accuracy(truth, promoted_at_event, None, final_version)
                                              if promoted_at_event is not None else None),
    }
    with watcher.lock:
        snap = watcher.snapshots.get(final_version)
    result.accuracy["monitor_reported_new_version"] = snap.cumulative.get("accuracy") if snap and final_version > 1 else None
    missing = [name for name, h in (("a drift alert", alert), ("a retrain request", request),
                                    ("a promoted version", promoted)) if h is None]
    recovered = result.accuracy.get(f"v{final_version}_after_promotion")
    if missing:
        result.problem = result.problem or "did not see " + ", ".join(missing)
    elif recovered is None or recovered < 0.9:
        result.problem = result.problem or f"accuracy did not recover (new version: {recovered})"
    result.ok = result.problem is None


def print_summary(view: View, result: DemoResult, report: Path) -> None:
    t, acc = result.timings, result.accuracy
    lines = ["", "Summary", "-------"]
    lines.append(f"  events replayed            {result.events_sent}")
    lines.append(f"  broker up                  {t.get('broker_ready', '-')}s")
    lines.append(f"  v1 trained                 {t.get('v1_trained', '-')}s")
    lines.append(f"  monitor + worker up        {t.get('daemons_up', '-')}s")
    lines.append(f"  drift injected             {t.get('drift_injected', '-')}s")
    lines.append(f"  first alert                {t.get('first_alert', '-')}s  "
                 f"(+{t.get('alert_delay_s', '-')}s, {result.alert_delay_events} events after the drift)")
    lines.append(f"  retrain request            {t.get('retrain_request', '-')}s")
    lines.append(f"  new version promoted       {t.get('promoted', '-')}s  (v{result.promoted_version}, "
                 f"+{t.get('drift_to_promotion_s', '-')}s after the drift)")
    lines.append(f"  loop finished              {t.get('summary', '-')}s")
    lines.append("  accuracy (ground truth)    " + ", ".join(f"{k}={fmt(v)}" for k, v in acc.items()))
    for name, values in result.metrics_scraped.items():
        shown = {k: v for k, v in values.items() if k.startswith(("driftline_events_processed_total",
                                                                  "driftline_alerts_total",
                                                                  "driftline_retrain_runs_total"))}
        lines.append(f"  /metrics {name:<8}          " + ", ".join(f"{k}={v:g}" for k, v in sorted(shown.items())))
    lines.append(f"  report                     {report.resolve()}")
    lines.append("  result                     " + ("OK: drift detected, retrained, promoted, recovered"
                                                     if result.ok else f"INCOMPLETE: {result.problem}"))
    for line in lines:
        view.line(line)


# -- the HTML report -----------------------------------------------------------------------------------


def write_report(report_dir: Path, settings, registry, result: DemoResult, drift_at: int) -> Path:
    """``index.html``: the report ``driftline report agrawal`` writes (from
    the topics and the registry), followed by what only the demo knows: the
    ground-truth accuracy, the timings, the policy and the Prometheus series."""
    data = gather(settings, DEMO_MODEL, registry=registry, quiet_s=1.0)
    status = "OK" if result.ok else f"INCOMPLETE: {html.escape(str(result.problem))}"
    about = (f"<p>Model <code>{DEMO_MODEL}</code> on River's Agrawal stream; concept drift (classification "
             f"function {BEFORE_FUNCTION} &rarr; {AFTER_FUNCTION}) injected after {drift_at} events. "
             f"{result.events_sent} events replayed. Result: <b>{status}</b>. Alert delay: "
             f"{html.escape(str(result.timings.get('alert_delay_s', '-')))}s "
             f"({html.escape(str(result.alert_delay_events))} events after the drift).</p>")
    extra = [
        ("The demo", about + table(["period", "accuracy (ground truth)"],
                                   [(k, fmt(v)) for k, v in result.accuracy.items()])),
        ("Timings (seconds since start)", table(["step", "seconds"], result.timings.items())),
        ("Policy", pretty_json(DEMO_POLICY)),
        ("Prometheus series at the end", pretty_json(result.metrics_scraped)),
    ]
    return write_model_report(data, report_dir, title=f"Driftline demo report: {DEMO_MODEL}", extra_sections=extra)
