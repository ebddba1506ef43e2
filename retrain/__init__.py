"""The retraining worker: retrain requests and schedules in, validated and
promoted versions out (``driftline worker``, ``driftline train``,
``python -m driftline.retrain``).

Names are imported lazily, so ``driftline --help`` does not load pandas or
scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CleaningReport": "data",
    "LabeledReader": "data",
    "TrainingData": "data",
    "build_frame": "data",
    "clean_frame": "data",
    "data_hash": "data",
    "split_holdout": "data",
    "build_recipe": "recipes",
    "is_improvement": "recipes",
    "meets_minimum": "recipes",
    "score": "recipes",
    "RunError": "trainer",
    "RunResult": "trainer",
    "Trainer": "trainer",
    "train_frame": "trainer",
    "Worker": "worker",
    "WorkerOptions": "options",
    "WorkerConfigError": "options",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'retrain' has no attribute {name!r}")
    # relative to this package: the same module objects as ``driftline.retrain.<module>``
    return getattr(importlib.import_module(f".{module}", __name__), name)
