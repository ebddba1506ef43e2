"""`driftline demo` as a user runs it: the loop completes, the report is
written, and no process is left behind — also when interrupted with Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.test_report import CHROMIUM, assert_self_contained, render_in_chromium

CLI = [sys.executable, "-m", "driftline"]


def _env() -> dict[str, str]:
    # the demo brings its own broker and registry: no DRIFTLINE_* from outside
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"\(pid (\d+)", output)]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids, timeout=15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if not _gone(p)]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_runs_the_loop_and_writes_the_report(tmp_path):
    env = _env()
    report = tmp_path / "report"
    result = subprocess.run(CLI + ["demo", "--report-dir", str(report)], env=env, capture_output=True, text=True,
                            timeout=230)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "result                     OK: drift detected, retrained, promoted, recovered" in out
    assert re.search(r"ALERT (concept_drift|metric) on \w+ \(v1", out)
    assert "retrain request (" in out and "model promoted: agrawal v2" in out
    before = float(re.search(r"v1_before_drift=([\d.]+)", out).group(1))
    dropped = float(re.search(r"v1_after_drift=([\d.]+)", out).group(1))
    recovered = float(re.search(r"v2_after_promotion=([\d.]+)", out).group(1))
    assert before > 0.95 and dropped < 0.65 and recovered > 0.9
    assert "\x1b[" not in out  # not a terminal: plain lines, no redraws
    page = (report / "index.html").read_text()
    # the report `driftline report` writes (tests/test_report.py), plus the demo's own sections
    assert_self_contained(page)
    assert page.count("<svg") >= 3  # metrics, drift statistics, labels
    assert "<b>v1</b>" in page and "<b>v2</b>" in page and "v2 rolling" in page
    assert re.search(r"<td>model promoted</td><td><span class=\"wrap\">v2 ", page)
    assert "accuracy (ground truth)" in page
    if CHROMIUM is not None:
        assert render_in_chromium(report / "index.html", report / "report.png") == []
    pids = _pids(out)
    assert len(pids) == 3  # broker, monitor, worker
    assert _wait_gone(pids, timeout=1) == []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_ctrl_c_leaves_no_process_behind(tmp_path):
    env = _env()
    process = subprocess.Popen(CLI + ["demo", "--report-dir", str(tmp_path / "r")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    try:
        for line in process.stdout:
            seen += line
            if "events, serving v1" in line or "running" in line and "worker" in line:
                break
        pids = _pids(seen)
        assert len(pids) == 3, seen
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, seen + rest
    assert "interrupted" in rest
    assert _wait_gone(pids) == []
