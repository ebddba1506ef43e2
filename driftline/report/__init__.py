"""``driftline report MODEL``: an HTML report of one model.

Built from the ``metrics``, ``alerts``, ``retrain-requests`` and
``model-events`` topics (:mod:`driftline.report.data`) and the registry's
versions; drawn by :mod:`driftline.report.figures` and laid out by
:mod:`driftline.report.page` as one self-contained ``index.html`` (inline
SVG plots and CSS, no script, nothing fetched).

The registry is passed in, already open: the core does not import the
services (the CLI command opens it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .data import ReportData, ReportError, parse_since, read_registry, read_topics

__all__ = ["ReportData", "ReportError", "parse_since", "gather", "write_report"]


def gather(settings, model: str, registry=None, since: float | None = None, quiet_s: float = 2.0) -> ReportData:
    """Read the topics (and the registry, when given) for ``model``."""
    data = read_topics(settings, model, since=since, quiet_s=quiet_s)
    if registry is not None:
        try:
            data.versions = read_registry(registry, model)
        except LookupError as error:  # driftline.registry.NotFoundError: the model is not registered
            data.registry_error = str(error)
    return data


def write_report(data: ReportData, out_dir: str | Path, title: str | None = None,
                 extra_sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write ``out_dir/index.html``; returns its path."""
    from .page import render

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(render(data, title=title, extra_sections=extra_sections), encoding="utf-8")
    return path
