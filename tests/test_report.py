"""``driftline report``: the HTML report of a model.

The report of a real run (drift, retrain, promotion) is checked by
:func:`check_report_of_run`, called at the end of the end-to-end run in
``tests/test_e2e.py`` (no second multi-minute run): the page exists, embeds
its plots, names the drifted features and both versions, fetches nothing,
and renders in headless Chromium to a PNG without console messages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.events import Alert, MetricsSnapshot, ModelEvent, RetrainRequest
from driftline.report import ReportData, parse_since, write_report
from driftline.report.data import VersionInfo

CLI = [sys.executable, "-m", "driftline"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")

# Chromium writes every console message of the page (console.*, uncaught
# errors) as `...:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)`.
_CONSOLE = re.compile(r":CONSOLE(?::\d+)?\]\s*(.*)")


def render_in_chromium(page: Path, png: Path, width: int = 1280, height: int = 5000) -> list[str]:
    """Render ``page`` headless to ``png``; returns the page's console messages."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
         "--v=0", f"--window-size={width},{height}", f"--screenshot={png}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", result.stderr[-3000:]
    return [m.group(1) for m in map(_CONSOLE.search, result.stderr.splitlines()) if m]


def assert_self_contained(page: str) -> None:
    """Nothing the page would fetch: no script, stylesheet link, or src/href/url() to a file or server."""
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.findall(r'\s(?:src|href|xlink:href)="(?!#|data:)[^"]*"', page)
    assert "url(" not in page.replace("url(#", "")


def check_report_of_run(env: dict, out: Path, model: str, drifted: set[str], versions: set[int]) -> Path:
    """Run ``driftline report`` against a finished run and check the page; returns the PNG."""
    result = subprocess.run(CLI + ["report", model, "--out", str(out), "--quiet-s", "1"], env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    page_path = out / "index.html"
    page = page_path.read_text(encoding="utf-8")
    assert page.count("<svg") == 3 + len(drifted)  # metrics, drift statistics, labels, one per drifted feature
    assert_self_contained(page)
    summary = re.search(r"Drifted features: (.*?)\.</li>", page).group(1)
    assert set(re.findall(r'class="drifted">([^<]+)<', summary)) == drifted
    for feature in drifted:
        assert f"<h3>{feature}</h3>" in page and f"{feature}: reference against the recent window" in page
    for version in versions:
        assert f"<b>v{version}</b>" in page  # the versions table
        assert f"v{version} rolling" in page  # a metrics line per version
    assert "promoted" in page and "retrain request" in page
    if CHROMIUM is not None:
        png = out / "report.png"
        assert render_in_chromium(page_path, png) == []
        return png
    return page_path


# -- fast tests: no run, no broker ------------------------------------------------------------------


def _synthetic() -> ReportData:
    """Two versions, a drifted numeric and categorical feature, a promotion."""
    t0 = 1_700_000_000.0
    profile = {"features": {
        "x": {"type": "numeric", "histogram": {"edges": [float(e) for e in range(11)], "counts": [5] * 10}},
        "plan": {"type": "categorical", "frequencies": {"a": 0.7, "b": 0.3}}}}
    snaps = []
    for i in range(20):
        version = 1 if i < 12 else 2
        shifted = 6 <= i < 12
        window = {"edges": [float(e) for e in range(5, 16)], "counts": [3] * 10, "n": 30} if shifted else \
            {"edges": [float(e) for e in range(11)], "counts": [3] * 10, "n": 30}
        drift = {"x": {"kind": "numeric", "statistic": 0.5 if shifted else 0.05, "threshold": 0.2, "p_value": 0.01,
                       "missing": 0, "outliers": 0, "window": window},
                 "plan": {"kind": "categorical", "statistic": 40.0 if shifted else 1.0, "threshold": 20.0,
                          "window": {"frequencies": {"b": 0.9, "a": 0.1} if shifted else {"a": 0.7, "b": 0.3},
                                     "n": 30}}}
        stats = {"joined": 10 * i, "label_coverage": 0.95, "label_delay_p50_s": 1.5, "drift": drift}
        if version == 2:  # a calibrated version: estimated accuracy and its gap to the realized one
            stats["estimated"] = {"n": 200, "method": "cbpe", "accuracy": 0.875, "accuracy_ci": [0.83, 0.92]}
            stats["estimation_gap"] = {"metric": "accuracy", "last": -0.025, "mean_abs": 0.0125, "windows": []}
        snaps.append(MetricsSnapshot("m", version, t0 + 10 * i, {"accuracy": 0.9}, {"accuracy": 0.9 - 0.3 * shifted},
                                     stats))
    alerts = [Alert(f"a{f}", "m", 1, "data_drift", f, "ks", 0.5, 0.2, t0 + 65, f"drift in {f}") for f in ("x", "plan")]
    return ReportData(
        model="m", snapshots=snaps, alerts=alerts,
        requests=[RetrainRequest("r1", "m", "drift", t0 + 70, ["ax"], 1)],
        model_events=[ModelEvent("promoted", "m", t0 + 118, version=2, metrics={"candidate_accuracy": 0.95})],
        versions=[VersionInfo(1, "ready", t0 - 100, [], {"candidate_accuracy": 0.97}, {}, None, None, profile),
                  VersionInfo(2, "ready", t0 + 110, ["champion"], {"candidate_accuracy": 0.95},
                              {"parent_version": 1}, "r1", None, profile)])


def test_report_of_records_names_drifted_features_and_versions(tmp_path):
    path = write_report(_synthetic(), tmp_path / "r")
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert page.count("<svg") == 5  # metrics, drift statistics, labels, two drifted features
    assert "<h3>x</h3>" in page and "<h3>plan</h3>" in page
    assert "<b>v1</b>" in page and "<b>v2</b>" in page and "parent_version: 1" in page
    # estimated beside realized, for the calibrated version only
    estimated = page.split("<h2>Estimated performance</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<td>v2</td><td>cbpe</td><td>200</td><td>accuracy</td><td>0.875</td>" in estimated
    assert "0.83 – 0.92" in estimated and "-0.025" in estimated and "0.0125" in estimated
    assert "<td>v1</td>" not in estimated
    assert "v2 estimated" in page  # its dotted line in the metrics figure


def test_report_of_nothing_still_renders(tmp_path):
    page = write_report(ReportData(model="m"), tmp_path).read_text(encoding="utf-8")
    assert "No feature drifted in the period." in page and "No versions in the registry." in page


def test_since_parses_durations_and_times():
    assert parse_since("90s", now=1000.0) == 910.0
    assert parse_since("1d", now=100_000.0) == 100_000.0 - 86400
    assert parse_since("2026-01-01T00:00:00+01:00") == parse_since("2025-12-31T23:00:00")


def test_report_command_refuses_a_bad_since(tmp_path):
    result = subprocess.run(CLI + ["report", "m", "--since", "yesterday-ish", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "--since: 'yesterday-ish' is not a duration" in result.stderr


@needs_chromium
def test_chromium_check_sees_console_errors(tmp_path):
    """The console check can fail: a page with an error is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><p>x</p><script>console.error('report-broken'); nosuch();</script>")
    messages = render_in_chromium(page, tmp_path / "bad.png", 400, 300)
    assert any("report-broken" in m for m in messages)
    assert any("Uncaught ReferenceError" in m for m in messages)


@needs_chromium
def test_synthetic_report_renders_without_console_messages(tmp_path):
    path = write_report(_synthetic(), tmp_path)
    assert render_in_chromium(path, tmp_path / "report.png") == []


# -- what the monitor's snapshots carry for the report -----------------------------------------------


def test_drift_tests_keep_the_tested_window_and_its_threshold():
    import numpy as np

    from driftline.streams.drift import CategoricalDriftTest, NumericDriftTest

    rng = np.random.default_rng(3)
    profile = {"type": "numeric", "count": 5000, "quantiles": list(np.quantile(rng.uniform(0, 10, 5000),
                                                                          np.linspace(0, 1, 101)))}
    test = NumericDriftTest(window=400, profile=profile)
    window = rng.uniform(5, 15, 400)
    [result] = test.update(window, alpha=1e-4)
    assert test.last_threshold == result.threshold and test.last_statistic == result.statistic
    hist = test.last_histogram
    assert hist["n"] == 400 and sum(hist["counts"]) == 400 and len(hist["edges"]) == 21
    assert hist["edges"][0] == pytest.approx(profile["quantiles"][0]) and hist["edges"][-1] == window.max()
    assert hist["counts"] == np.histogram(window, bins=hist["edges"])[0].tolist()
    old_state = test.to_state()
    old_state["last"] = old_state["last"][:2]  # a checkpoint written before these fields existed
    restored = NumericDriftTest.from_state(old_state)
    assert restored.last_statistic == result.statistic and restored.last_histogram is None

    cat = CategoricalDriftTest(window=200, profile={"type": "categorical", "count": 1000,
                                                    "frequencies": {"a": 0.7, "b": 0.3}})
    [result] = cat.update(["b"] * 150 + ["a"] * 50, alpha=1e-4)
    assert cat.last_histogram == {"frequencies": {"b": 0.75, "a": 0.25}, "n": 200}
    assert cat.last_threshold == result.threshold
    assert CategoricalDriftTest.from_state(cat.to_state()).last_histogram == cat.last_histogram


# -- the command on a real broker, records written by hand (no daemons) ------------------------------


def test_report_command_reads_the_topics_since_a_time(settings, test_env, tmp_path):
    """Only the given model's records at or after --since are shown; the registry is optional."""
    import time

    from kafka import KafkaProducer

    from driftline import events

    now = time.time()
    old, new = now - 7200, now - 60
    records = [
        (settings.topics.metrics, MetricsSnapshot("m", 1, old, {"accuracy": 0.5}, {"accuracy": 0.5}, {})),
        (settings.topics.metrics, MetricsSnapshot("m", 1, new, {"accuracy": 0.9}, {"accuracy": 0.9}, {})),
        (settings.topics.metrics, MetricsSnapshot("other", 7, new, {"accuracy": 0.1}, {}, {})),
        (settings.topics.alerts, Alert("old-alert", "m", 1, "data_drift", "age", "ks", 0.5, 0.2, old, "old drift")),
        (settings.topics.alerts, Alert("new-alert", "m", 1, "data_drift", "plan", "chi2", 40.0, 20.0, new, "drift")),
        (settings.topics.model_events, ModelEvent("promoted", "m", new, version=1)),
    ]
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_list)
    for topic, record in records:
        producer.send(topic, events.encode(record))
    producer.flush()
    producer.close()
    out = tmp_path / "r"
    result = subprocess.run(CLI + ["report", "m", "--since", "1h", "--out", str(out), "--quiet-s", "1"],
                            env=test_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 snapshot(s), 1 alert(s), 0 version(s); drifted features: plan" in result.stdout
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "<h3>plan</h3>" in page and "<h3>age</h3>" not in page and "old drift" not in page
    assert "v7" not in page  # another model's version
    result = subprocess.run(CLI + ["report", "nobody", "--out", str(out), "--quiet-s", "1"], env=test_env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "nothing known about model 'nobody'" in result.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
