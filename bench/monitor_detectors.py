"""Detection delay and false alarms of the monitor's drift detectors, and
the per-event cost of ModelMonitor (pure Python, no Kafka).

Run: ``.venv/bin/python bench/monitor_detectors.py [--events 50000] [--seeds 3]``

Streams (seeded):

* data drift: 10 numeric N(0, 1) features + 1 categorical (a/b/c at
  0.5/0.3/0.2) through a full :class:`ModelMonitor` with the default policy
  except the data-drift detector; the shifted stream moves feature ``f3`` by
  +0.5 (and +0.25) standard deviations. Reference: a registry-style
  profile built from 20,000 separate events ("profile") or the stream's own
  first events ("self"). Events go in batches of 100, so data-drift delays
  are rounded up to the batch end.
* concept drift: the 0/1 error stream of a classifier, error rate 0.20,
  jumping to 0.35 at the middle event, through each River detector with the
  default parameters (ADWIN with the policy default delta=0.002).

"false alarms" counts detections on the stationary stream plus detections
before the shift on the shifted one; "delay" is events from the shift to
the first detection after it (mean over seeds; "-" = missed).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from driftline.events import LabeledRecord, Prediction  # noqa: E402
from driftline.policy import DetectorSpec, MonitorPolicy  # noqa: E402
from driftline.streams.drift import ConceptDriftDetector  # noqa: E402
from driftline.streams.model_monitor import ModelMonitor  # noqa: E402

N_FEATURES = 10
CATS = np.array(["a", "b", "c"])


def make_profile(rng: np.random.Generator, rows: int = 20_000) -> dict:
    """A profile in the registry's format (driftline.registry.profile.build_profile)."""
    feats = {}
    for j in range(N_FEATURES):
        x = rng.normal(size=rows)
        counts, edges = np.histogram(x, bins=20)
        feats[f"f{j}"] = {"type": "numeric", "count": rows, "missing_share": 0.0, "min": float(x.min()),
                          "max": float(x.max()), "mean": float(x.mean()), "std": float(x.std()),
                          "quantiles": np.quantile(x, np.linspace(0, 1, 101)).tolist(),
                          "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}
    feats["cat"] = {"type": "categorical", "count": rows, "missing_share": 0.0,
                    "frequencies": {"a": 0.5, "b": 0.3, "c": 0.2}}
    return {"rows": rows, "features": feats}


def make_events(rng: np.random.Generator, n: int, shift_at: int | None, shift: float = 0.5,
                feature: int = 3) -> list[Prediction]:
    x = rng.normal(size=(n, N_FEATURES))
    if shift_at is not None:
        x[shift_at:, feature] += shift
    cat = CATS[rng.choice(3, p=[0.5, 0.3, 0.2], size=n)]
    lat = rng.gamma(4.0, 5.0, size=n)
    names = [f"f{j}" for j in range(N_FEATURES)]
    rows = x.tolist()
    return [Prediction(f"e{i}", "bench", 1, float(i), {**dict(zip(names, rows[i])), "cat": str(cat[i])},
                       "yes" if rows[i][0] > 0 else "no", None, float(lat[i])) for i in range(n)]


def run_data(events: list[Prediction], policy: MonitorPolicy, profile: dict | None, batch: int = 100):
    mon = ModelMonitor("bench", policy, lambda v: profile)
    hits = []
    for s in range(0, len(events), batch):
        out = mon.observe_predictions(events[s:s + batch], now=float(s))
        hits += [(s + batch - 1, a.subject) for a in out.alerts if a.kind in ("data_drift", "prediction_drift")]
    return hits


def data_table(n: int, seeds: int) -> list[tuple]:
    rows = []
    # Off the window grid: a real shift lands mid-window.
    half = n // 2 + 137
    cases = [(name, ref, 0.5) for name in ("ks", "psi", "chi2") for ref in ("profile", "self")]
    cases += [("ks", "profile", 0.25), ("ks", "self", 0.25)]
    for name, ref, size in cases:
        if True:
            # cooldown 0: count every detection, not just one per cooldown.
            policy = MonitorPolicy(data_drift=DetectorSpec(name), cooldown_s=1e-9)
            false, delays = 0, []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                profile = make_profile(rng) if ref == "profile" else None
                false += len(run_data(make_events(rng, n, None), policy, profile))
                hits = run_data(make_events(rng, n, half, shift=size), policy, profile)
                false += sum(1 for i, _ in hits if i < half)
                after = [i for i, subj in hits if i >= half and subj == "f3"]
                if after:
                    delays.append(after[0] - half)
            rows.append((f"data {name} ({ref}), {size} sd", seeds * 2 * n, false, delays, seeds))
    # River per-event detectors on one feature (slow: one Python call per value).
    for name in ("kswin", "adwin", "page_hinkley"):
        policy = MonitorPolicy(data_drift=DetectorSpec(name), cooldown_s=1e-9)
        m = min(n, 20_000)
        false, delays = 0, []
        for seed in range(seeds):
            from driftline.streams.drift import RiverFeatureDetector, per_test_alpha

            rng = np.random.default_rng(seed)
            alpha = per_test_alpha(policy.expected_run_length, 12, policy.drift_window) / policy.drift_window
            det = RiverFeatureDetector(policy.data_drift, alpha)
            false += len(det.update(rng.normal(size=m)))
            det = RiverFeatureDetector(policy.data_drift, alpha)
            x = rng.normal(size=m)
            x[m // 2:] += 0.5
            hits = [r.offset for r in det.update(x)]
            false += sum(1 for i in hits if i < m // 2)
            after = [i for i in hits if i >= m // 2]
            if after:
                delays.append(after[0] - m // 2)
        rows.append((f"data {name} (1 feature, per event)", seeds * 2 * m, false, delays, seeds))
    return rows


def concept_table(n: int, seeds: int) -> list[tuple]:
    rows = []
    half = n // 2
    for name in ("adwin", "ddm", "eddm", "hddm_a", "hddm_w", "fhddm", "page_hinkley"):
        spec = DetectorSpec(name, {"delta": 0.002} if name == "adwin" else {})
        false, delays = 0, []
        for seed in range(seeds):
            rng = np.random.default_rng(100 + seed)
            det = ConceptDriftDetector(spec, "classification")
            false += len(det.update((rng.random(n) < 0.2).astype(float)))
            det = ConceptDriftDetector(spec, "classification")
            err = np.r_[rng.random(half) < 0.2, rng.random(n - half) < 0.35].astype(float)
            hits = det.update(err)
            false += sum(1 for i in hits if i < half)
            after = [i for i in hits if i >= half]
            if after:
                delays.append(after[0] - half)
        rows.append((f"concept {name}", seeds * 2 * n, false, delays, seeds))
    return rows


def cost(n: int, batch: int) -> dict[str, float]:
    rng = np.random.default_rng(42)
    events = make_events(rng, n, None)
    labels = rng.random(n) < 0.8
    joined = [LabeledRecord(e.event_id, "bench", 1, e.features, e.prediction,
                            e.prediction if ok else ("no" if e.prediction == "yes" else "yes"), e.timestamp,
                            e.timestamp + 1.0, {"yes": 0.7, "no": 0.3} if e.prediction == "yes" else
                            {"yes": 0.3, "no": 0.7}, e.latency_ms) for e, ok in zip(events, labels.tolist())]
    policy = MonitorPolicy(latency_p95_ms=1000.0, metric_thresholds={"accuracy": 0.5})
    mon = ModelMonitor("bench", policy, lambda v: None)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        mon.observe_predictions(events[s:s + batch], now=s / 50_000)  # clock of a 50k events/s stream
    t1 = time.perf_counter()
    for s in range(0, n, batch):
        mon.observe_joined(joined[s:s + batch], now=s / 50_000)
    t2 = time.perf_counter()
    snaps = mon.snapshots(now=float(n))
    t3 = time.perf_counter()
    state = mon.to_state()
    t4 = time.perf_counter()
    ModelMonitor.from_state(state, policy, lambda v: None)
    t5 = time.perf_counter()
    # Baseline in the same run: just touching every feature value in Python.
    b0 = time.perf_counter()
    total = 0.0
    for e in events:
        for v in e.features.values():
            if type(v) is float:
                total += v
    b1 = time.perf_counter()
    return {"batch": batch, "predictions_us": (t1 - t0) / n * 1e6, "joined_us": (t2 - t1) / n * 1e6,
            "snapshot_ms": (t3 - t2) * 1e3, "state_kb": len(state) / 1024, "to_state_ms": (t4 - t3) * 1e3,
            "from_state_ms": (t5 - t4) * 1e3, "baseline_loop_us": (b1 - b0) / n * 1e6, "_": len(snaps)}


def _fmt_delay(delays: list[int], seeds: int) -> str:
    if not delays:
        return "-"
    missed = seeds - len(delays)
    text = f"{np.mean(delays):.0f} (min {min(delays)}, max {max(delays)})"
    return text + (f", missed {missed}" if missed else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-tables", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_tables:
        print(f"{'detector':40s} {'events':>9s} {'false alarms':>12s}  delay after shift (events)")
        for row in data_table(args.events, args.seeds) + concept_table(args.events, args.seeds):
            label, events, false, delays, seeds = row
            print(f"{label:40s} {events:9d} {false:12d}  {_fmt_delay(delays, seeds)}")
        print()
    print("ModelMonitor per-event cost, 10 numeric + 1 categorical feature, all metrics and drift on")
    cost(3000, 1000)  # warm-up: imports and first-call costs stay out of the figures
    for batch in (1000, 100, 1):
        n = 20_000 if batch > 1 else 5_000
        c = cost(n, batch)
        total = c["predictions_us"] + c["joined_us"]
        print(f"  batch {batch:5d}: predictions {c['predictions_us']:.2f} us/event, joined {c['joined_us']:.2f} "
              f"us/event -> {1e6 / total:,.0f} events/s (prediction + label); snapshot {c['snapshot_ms']:.1f} ms; "
              f"state {c['state_kb']:.0f} KB (to {c['to_state_ms']:.0f} ms, from {c['from_state_ms']:.0f} ms); "
              f"baseline python loop over features {c['baseline_loop_us']:.2f} us/event")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
