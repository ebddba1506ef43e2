"""The retraining worker: retrain requests and schedules in, validated and
promoted versions out (``driftline worker``, ``driftline train``,
``python -m retrain``)."""

from .data import CleaningReport, LabeledReader, TrainingData, build_frame, clean_frame, data_hash, split_holdout
from .recipes import build_recipe, is_improvement, meets_minimum, score
from .trainer import RunError, RunResult, Trainer, train_frame

__all__ = [
    "CleaningReport",
    "LabeledReader",
    "TrainingData",
    "build_frame",
    "clean_frame",
    "data_hash",
    "split_holdout",
    "build_recipe",
    "is_improvement",
    "meets_minimum",
    "score",
    "RunError",
    "RunResult",
    "Trainer",
    "train_frame",
]
