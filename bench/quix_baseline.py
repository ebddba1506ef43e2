"""The measuring stick of ``bench/monitor.py``: a hand-written quixstreams + River app.

What an engineer writes in a day instead of Driftline: a quixstreams
``Application`` reading the predictions and labels topics (JSON), a plain
dict joining each prediction with its label by ``event_id``, River's
Accuracy, F1, LogLoss and ROCAUC per model, and an ADWIN per feature and one
on the error stream. No dead letters, no durable join state, no alerts.

It runs in its own virtual environment (``pip install quixstreams river``,
made by ``bench/monitor.py`` in ``.bench-venv/quixstreams``), not in
Driftline's: it imports nothing from Driftline.

Run (by bench/monitor.py): ``python bench/quix_baseline.py BOOTSTRAP PREDICTIONS_TOPIC LABELS_TOPIC
EXPECTED_EVENTS GROUP``. It prints one JSON line: the seconds from the first
message to the last joined event, the events joined, and its peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main(argv: list[str]) -> None:
    from quixstreams import Application
    from river import drift, metrics

    bootstrap, predictions_topic, labels_topic, expected, group = argv
    expected = int(expected)
    app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                      use_changelog_topics=False, auto_create_topics=False, loglevel="WARNING")

    pending_predictions: dict[str, dict] = {}
    pending_labels: dict[str, dict] = {}
    models: dict[str, dict] = {}
    progress = {"joined": 0, "first": None, "last": None}

    def model_state(name: str) -> dict:
        state = models.get(name)
        if state is None:
            state = models[name] = {"accuracy": metrics.Accuracy(), "f1": metrics.F1(), "log_loss": metrics.LogLoss(),
                                    "roc_auc": metrics.ROCAUC(), "feature_drift": {}, "error_drift": drift.ADWIN(),
                                    "alarms": 0}
        return state

    def joined(prediction: dict, label: dict) -> None:
        state = model_state(prediction["model"])
        y_true, y_pred = label["label"], prediction["prediction"]
        state["accuracy"].update(y_true, y_pred)
        state["f1"].update(y_true, y_pred)
        probabilities = {int(k) if k.isdigit() else k: v for k, v in (prediction.get("probabilities") or {}).items()}
        if probabilities:
            state["log_loss"].update(y_true, probabilities)
            state["roc_auc"].update(y_true, probabilities)
        detectors = state["feature_drift"]
        for name, value in prediction["features"].items():
            detector = detectors.get(name)
            if detector is None:
                detector = detectors[name] = drift.ADWIN()
            detector.update(value)
            state["alarms"] += detector.drift_detected
        state["error_drift"].update(int(y_true != y_pred))
        state["alarms"] += state["error_drift"].drift_detected
        progress["joined"] += 1

    def on_predictions(value) -> None:
        progress["first"] = progress["first"] or time.perf_counter()
        for prediction in value if isinstance(value, list) else [value]:
            label = pending_labels.pop(prediction["event_id"], None)
            if label is None:
                pending_predictions[prediction["event_id"]] = prediction
            else:
                joined(prediction, label)
        check_done()

    def on_labels(value) -> None:
        progress["first"] = progress["first"] or time.perf_counter()
        for label in value if isinstance(value, list) else [value]:
            prediction = pending_predictions.pop(label["event_id"], None)
            if prediction is None:
                pending_labels[label["event_id"]] = label
            else:
                joined(prediction, label)
        check_done()

    def check_done() -> None:
        if progress["joined"] >= expected and progress["last"] is None:
            progress["last"] = time.perf_counter()
            app.stop()

    app.dataframe(app.topic(predictions_topic, value_deserializer="json")).apply(on_predictions)
    app.dataframe(app.topic(labels_topic, value_deserializer="json")).apply(on_labels)
    app.run()
    summary = {name: {key: round(state[key].get(), 4) for key in ("accuracy", "f1", "log_loss", "roc_auc")}
               for name, state in models.items()}
    print(json.dumps({"seconds": (progress["last"] or time.perf_counter()) - (progress["first"] or 0.0),
                      "joined": progress["joined"], "pending": len(pending_predictions) + len(pending_labels),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "metrics": summary, "alarms": {n: s["alarms"] for n, s in models.items()}}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
