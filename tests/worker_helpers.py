"""Shared helpers for the worker tests: labeled data, requests, processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from kafka import KafkaProducer

from driftline import events
from driftline.events import LabeledRecord, RetrainRequest

ROOT = Path(__file__).resolve().parents[1]


def make_records(model: str, n: int, *, seed: int = 0, start_ts: float | None = None, flip: bool = False,
                 single_class: bool = False) -> list[LabeledRecord]:
    """Separable-ish classification data: label = x1 + 0.5*x2 + noise > 0."""
    rng = np.random.default_rng(seed)
    start_ts = events.now() - n if start_ts is None else start_ts
    out = []
    for i in range(n):
        x1, x2 = float(rng.normal()), float(rng.normal())
        plan = ["basic", "pro", "team"][int(rng.integers(3))]
        label = int(x1 + 0.5 * x2 + rng.normal(0, 0.3) > 0)
        if flip:
            label = 1 - label
        if single_class:
            label = 1
        ts = start_ts + i
        out.append(LabeledRecord(event_id=f"{model}-{seed}-{i}", model=model, model_version=1,
                                 features={"x1": x1, "x2": x2, "plan": plan}, prediction=label, label=label,
                                 prediction_timestamp=ts - 0.5, label_timestamp=ts))
    return out


def producer(settings) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=settings.bootstrap_list, acks="all", linger_ms=5,
                         **settings.kafka_security())


def publish_records(settings, records: list[LabeledRecord], chunk: int = 500) -> None:
    prod = producer(settings)
    try:
        for start in range(0, len(records), chunk):
            part = records[start:start + chunk]
            prod.send(settings.topics.labeled, events.encode_many(part), key=part[0].event_id.encode())
        prod.flush(30)
    finally:
        prod.close(10)


def publish_requests(settings, payloads: list) -> None:
    """Send requests (RetrainRequest or raw bytes) to the retrain-requests topic, in order, on partition 0."""
    prod = producer(settings)
    try:
        for item in payloads:
            value = item if isinstance(item, bytes) else events.encode(item)
            prod.send(settings.topics.retrain_requests, value, partition=0)
        prod.flush(30)
    finally:
        prod.close(10)


def request(model: str, request_id: str, reason: str = "manual") -> RetrainRequest:
    return RetrainRequest(request_id=request_id, model=model, reason=reason, timestamp=events.now())


class WorkerProcess:
    """``python -m driftline.retrain`` as a child process (killed on exit, whatever happens)."""

    def __init__(self, env: dict, log_path: Path, *extra: str, pause_s: float | None = None,
                 group_id: str = "wtest"):
        env = dict(env)
        if pause_s is not None:
            env["DRIFTLINE_WORKER_PAUSE_S"] = str(pause_s)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.retrain", "--group-id", group_id, "--session-timeout-ms", "6000",
             "--heartbeat-interval-ms", "1000", "--quiet-ms", "500", "--policy-refresh-s", "30", *extra],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}) before {text!r}:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log()[-3000:]}")

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self._log.closed:
            self._log.close()


def read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def wait_until(predicate, timeout: float = 90.0, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s")
