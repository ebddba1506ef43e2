"""``driftline serve`` as a real process on the real broker and registry:
MLflow-format requests in every shape give the estimator's predictions, the
events land on ``predictions`` with the ids the response returned, ``/labels``
lands on ``labels``, a promotion during a request loop fails no request,
malformed bodies get a 400 naming the field, and /health and /metrics."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer

from driftline.broker import free_port
from driftline.events import Label, Prediction
from tests.kafka_helpers import read_records
from tests.test_champion import MODEL, train


class Server:
    def __init__(self, env: dict, log_path: Path, *extra: str):
        self.port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "driftline", "serve", MODEL, "--port", str(self.port), *extra],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.conn = None

    def request(self, method: str, path: str, body=None, raw: bytes | None = None):
        """(status, decoded JSON or text) over one kept-alive connection."""
        if self.conn is not None and self.conn.sock is not None:
            try:
                return self._request(method, path, body, raw)
            except http.client.RemoteDisconnected:  # idle past the server's keep-alive: once more, anew
                pass
        return self._request(method, path, body, raw)

    def _request(self, method: str, path: str, body=None, raw: bytes | None = None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = self.conn.getresponse()
        except (ConnectionError, http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = None
            raise
        text = response.read().decode()
        kind = response.getheader("Content-Type", "")
        return response.status, json.loads(text) if kind.startswith("application/json") else text

    def wait_up(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                return self.request("GET", "/health")[0]
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"server not up within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.conn is not None:
            self.conn.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X.iloc[:30], y.iloc[:30].to_numpy()


@pytest.fixture
def server(test_env, tmp_path):
    train(test_env, flip=False, promote=True)
    started = Server(test_env, tmp_path / "serve.log")
    yield started
    started.stop()


def _estimator(settings, version: int = 1):
    from driftline.registry import open_registry

    with open_registry(settings) as reg:
        return reg.load(f"{MODEL}/{version}").estimator


def test_mlflow_shapes_events_labels_errors_and_metrics(settings, server, cancer):
    X, y = cancer
    assert server.wait_up() == 200
    status, health = server.request("GET", "/health")
    assert (status, health["model_version"], health["model"], health["alias"]) == (200, 1, MODEL, "champion")
    expected = _estimator(settings).predict(X).tolist()
    records = json.loads(X.to_json(orient="records"))
    split = json.loads(X.to_json(orient="split", index=False))
    bodies = {
        "dataframe_records": {"dataframe_records": records},
        "dataframe_split": {"dataframe_split": {"columns": split["columns"], "data": split["data"]}},
        "instances": {"instances": records},
        "instances as lists": {"instances": split["data"]},
        "inputs as columns": {"inputs": {c: X[c].tolist() for c in X.columns}},
    }
    answers = {}
    for shape, body in bodies.items():
        status, answer = server.request("POST", "/invocations", body)
        assert status == 200, (shape, answer)
        assert answer["predictions"] == expected, shape
        assert answer["model_version"] == 1 and len(set(answer["event_ids"])) == len(X)
        answers[shape] = answer
    status, one = server.request("POST", "/invocations", {"dataframe_records": records[:1], "event_ids": ["mine-1"]})
    assert (status, one["event_ids"], one["predictions"]) == (200, ["mine-1"], expected[:1])

    # every row published, with the ids the responses returned
    sent = {e: (p, 1) for a in answers.values() for e, p in zip(a["event_ids"], a["predictions"])}
    sent["mine-1"] = (expected[0], 1)
    got = {p.event_id: p for p in read_records(settings, "predictions", Prediction,
                                                 until=lambda m: _count(m) >= len(sent), quiet_s=5.0)}
    assert set(got) == set(sent)
    for event_id, (prediction, version) in sent.items():
        assert (got[event_id].prediction, got[event_id].model_version) == (prediction, version)
        assert set(got[event_id].probabilities) == {"0", "1"}
    first = answers["dataframe_records"]["event_ids"]
    assert [got[e].features for e in first] == records

    # labels
    body = {"labels": [{"event_id": e, "label": int(t)} for e, t in zip(first, y)]}
    assert server.request("POST", "/labels", body) == (200, {"published": len(X)})
    labels = read_records(settings, "labels", Label, until=lambda m: _count(m) >= len(X), quiet_s=5.0)
    assert sorted((l.event_id, l.label) for l in labels) == sorted(zip(first, (int(t) for t in y)))

    # malformed bodies: 400 naming the field, never a 500
    row = dict(records[0])
    missing = {k: v for k, v in row.items() if k != "mean radius"}
    bad = [
        (b"{not json", "<body>"),
        ({"rows": records}, "<body>"),
        ({"dataframe_records": records, "instances": records}, "<body>"),
        ({"dataframe_records": [missing]}, "dataframe_records[0].mean radius"),
        ({"dataframe_records": [row, {**row, "mean texture": [1]}]}, "dataframe_records[1].mean texture"),
        ({"dataframe_records": [{**row, "mean texture": "thick"}]}, "dataframe_records"),
        ({"dataframe_records": []}, "dataframe_records"),
        ({"dataframe_split": {"columns": split["columns"], "data": [split["data"][0][:3]]}}, "dataframe_split.data[0]"),
        ({"dataframe_split": {"data": split["data"]}}, "dataframe_split.columns"),
        ({"instances": "x"}, "instances"),
        ({"dataframe_records": records[:2], "event_ids": ["a"]}, "event_ids"),
    ]
    for body, field in bad:
        status, answer = server.request("POST", "/invocations", raw=body if isinstance(body, bytes) else None,
                                        body=None if isinstance(body, bytes) else body)
        assert status == 400, (body if isinstance(body, bytes) else list(body), answer)
        assert answer["field"] == field and field in answer["message"] and answer["reason"], answer
        assert answer["error_code"] == "BAD_REQUEST" and "Traceback" not in answer["message"]
    for body, field in [({"labels": [{"event_id": "e"}]}, "labels[0].label"),
                        ({"labels": [{"event_id": 3, "label": 1}]}, "labels[0].event_id"),
                        ({"labels": [{"event_id": "e", "label": float("nan")}]}, "<body>"),
                        ({"label": []}, "labels")]:
        status, answer = server.request("POST", "/labels", raw=json.dumps(body).encode())
        assert (status, answer["field"]) == (400, field), answer

    status, text = server.request("GET", "/metrics")
    assert status == 200
    metrics = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith("driftline_serve")}
    assert metrics['driftline_serve_requests_total{endpoint="invocations",status="200"}'] == len(bodies) + 1
    assert metrics['driftline_serve_requests_total{endpoint="invocations",status="400"}'] == len(bad)
    assert metrics['driftline_serve_requests_total{endpoint="labels",status="400"}'] == 4
    assert metrics['driftline_serve_request_duration_seconds_count{endpoint="invocations"}'] == len(bodies) + 1 + len(bad)
    assert 'driftline_serve_request_duration_seconds_bucket{endpoint="invocations",le="0.005"}' in metrics
    assert metrics['driftline_serve_model_version{alias="champion",model="cancer"}'] == 1
    assert metrics['driftline_serve_reloads_total{alias="champion",model="cancer"}'] == 0
    assert metrics['driftline_serve_publish_failures_total{alias="champion",model="cancer"}'] == 0
    assert metrics['driftline_serve_rows_total'] == len(bodies) * len(X) + 1
    assert "Traceback" not in server.log()
    assert server.stop() == 0


def test_503_until_a_model_then_a_promotion_during_a_request_loop(settings, test_env, tmp_path, cancer):
    X, _ = cancer
    server = Server(test_env, tmp_path / "serve.log")
    try:
        assert server.wait_up() == 503                                    # nothing registered yet
        status, answer = server.request("POST", "/invocations", {"dataframe_records": [{"a": 1}]})
        assert (status, answer["error_code"]) == (503, "NOT_READY")
        train(test_env, flip=False, promote=True)                       # v1 appears: picked up from its event
        deadline = time.monotonic() + 20
        while server.request("GET", "/health")[0] != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)

        records = json.loads(X.to_json(orient="records"))
        v1 = _estimator(settings, 1).predict(X).tolist()
        results: list = []
        stop = threading.Event()

        def loop():
            client = Server.__new__(Server)                             # its own connection
            client.port, client.conn = server.port, None
            while not stop.is_set():
                try:
                    # no retry here: a dropped request must show
                    results.append(client._request("POST", "/invocations", {"dataframe_records": records}))
                except OSError as error:
                    results.append((None, repr(error)))

        threads = [threading.Thread(target=loop) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        train(test_env, flip=True, promote=True)                        # v2, promoted by another process
        deadline = time.monotonic() + 20
        while not any(r[0] == 200 and r[1]["model_version"] == 2 for r in results[-5:]):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(30)
        failed = [r for r in results if r[0] != 200]
        assert not failed, failed[:3]
        versions = [answer["model_version"] for _, answer in results]
        assert versions.count(1) > 0 and versions.count(2) > 0
        for _, answer in results:  # each answer wholly from the version it names
            expected = v1 if answer["model_version"] == 1 else [1 - p for p in v1]
            assert answer["predictions"] == expected
        status, text = server.request("GET", "/metrics")
        assert 'driftline_serve_reloads_total{alias="champion",model="cancer"} 1.0' in text
        assert 'driftline_serve_model_version{alias="champion",model="cancer"} 2.0' in text
    finally:
        assert server.stop() == 0, server.log()


def _count(messages) -> int:
    return sum(len(json.loads(m.value)) if m.value.startswith(b"[") else 1 for m in messages)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_real_monitor_joins_the_labels_sent_through_the_server(settings, test_env, tmp_path, cancer):
    from driftline.demo import Daemon
    from driftline.events import LabeledRecord

    X, y = cancer
    train(test_env, flip=False, promote=True)
    monitor = Daemon("monitor", ["monitor", "--metrics-port", str(free_port()), "--data-dir",
                                 str(tmp_path / "monitor"), "--snapshot-interval", "1", "--session-timeout", "6"],
                     test_env, tmp_path / "monitor.log")
    server = Server(test_env, tmp_path / "serve.log")
    try:
        assert server.wait_up() == 200
        records = json.loads(X.to_json(orient="records"))
        status, answer = server.request("POST", "/invocations", {"dataframe_records": records})
        assert status == 200
        labels = [{"event_id": e, "label": int(t)} for e, t in zip(answer["event_ids"], y)]
        assert server.request("POST", "/labels", {"labels": labels})[0] == 200
        joined = read_records(settings, "labeled", LabeledRecord, until=lambda m: _count(m) >= len(X),
                              timeout_s=180, quiet_s=200)
        assert monitor.running, monitor.tail()
        by_id = {r.event_id: r for r in joined}
        assert set(by_id) == set(answer["event_ids"])
        for event_id, prediction, row, truth in zip(answer["event_ids"], answer["predictions"], records, y):
            record = by_id[event_id]
            assert (record.prediction, record.label, record.model_version) == (prediction, int(truth), 1)
            assert record.features == row and set(record.probabilities) == {"0", "1"}
    finally:
        server.stop()
        monitor.stop()
