"""Helpers of the Prometheus tests: the README's table of series, a scrape
parsed into families, and the series the dashboard and the alert rules
query (metric names, label matchers and grouping labels of every PromQL
expression)."""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "driftline.json"
RULES = ROOT / "deploy" / "prometheus-rules.yml"
#: series Prometheus itself adds to every scrape target, with their labels
SCRAPE_SERIES = {"up": {"job", "instance"}}


@dataclass(frozen=True)
class Row:
    name: str
    source: str  # monitor, worker or both
    labels: frozenset
    what: str


def readme_series() -> list[Row]:
    """The rows of the README's table in "Prometheus metrics"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Prometheus metrics"):]
    section = section[:section.index("\n## ", 5)]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`driftline_"):
            continue
        labels = frozenset(re.findall(r"`([a-z_]+)`", cells[2]))
        rows.append(Row(cells[0].strip("`"), cells[1], labels, cells[3]))
    assert rows, "no series table in the README's Prometheus section"
    return rows


def scrape(port: int) -> dict[str, list[dict]]:
    """``family name -> [sample labels, ...]``; counters keep ``_total`` and
    histograms their base name (``le`` dropped)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    families: dict[str, list[dict]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        samples = []
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = {k: v for k, v in sample.labels.items() if not (family.type == "histogram" and k == "le")}
            samples.append(labels)
        if samples:
            families[name] = samples
    return families


def label_names(samples: list[dict]) -> set[str]:
    return {key for labels in samples for key in labels}


def versions_of(families: dict[str, list[dict]], model: str) -> set[str]:
    return {labels["version"] for samples in families.values() for labels in samples
            if labels.get("model") == model and "version" in labels}


# -- PromQL ---------------------------------------------------------------------------

_SELECTOR = re.compile(r"(?<![\w$.])(driftline_[a-zA-Z0-9_]+|up)\b\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


@dataclass(frozen=True)
class Reference:
    expr: str
    metric: str
    labels: frozenset  # label names in the selector's matchers


def references(expr: str) -> tuple[list[Reference], set[str]]:
    """The selectors of a PromQL expression and the labels it groups by."""
    refs = [Reference(expr, m.group(1), frozenset(name for name, _ in _MATCHER.findall(m.group(2) or "")))
            for m in _SELECTOR.finditer(expr)]
    grouping = {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()}
    return refs, grouping


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard: panels, variables, annotations."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_]\w*)\)", query)
        assert match, query
        exprs.append(f"sum by ({match.group(2)}) ({match.group(1)})")  # the label must exist on the series
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if a.get("expr")]
    return exprs


def rules_exprs() -> list[str]:
    import yaml

    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def family_of(metric: str, families: dict) -> str | None:
    if metric in families:
        return metric
    for part in _HISTOGRAM_PARTS:
        if metric.endswith(part) and metric[:-len(part)] in families:
            return metric[:-len(part)]
    return None


def unexported(exprs: list[str], families: dict[str, list[dict]]) -> list[str]:
    """What the expressions query that ``families`` (a live scrape) lacks:
    metric names, matcher labels and grouping labels."""
    problems = []
    for expr in exprs:
        refs, grouping = references(expr)
        if not refs:
            problems.append(f"{expr!r}: no Driftline series")
        available: set[str] = set()
        for ref in refs:
            if ref.metric in SCRAPE_SERIES:
                labels = SCRAPE_SERIES[ref.metric]
            else:
                family = family_of(ref.metric, families)
                if family is None:
                    problems.append(f"{expr!r}: {ref.metric} is not exported")
                    continue
                labels = label_names(families[family]) | ({"le"} if ref.metric.endswith("_bucket") else set())
            available |= labels
            missing = set(ref.labels) - labels
            if missing:
                problems.append(f"{expr!r}: {ref.metric} has no label {sorted(missing)}")
        if grouping - available and available:
            problems.append(f"{expr!r}: groups by {sorted(grouping - available)}, not a label of its series")
    return problems


def optional(row: Row, task: str = "classification", probabilities: bool = False) -> bool:
    """A documented series a run of this kind does not produce."""
    if "regression models only" in row.what:
        return task != "regression"
    if "classification" in row.what and task != "classification":
        return True
    return "`probabilities`" in row.what and not probabilities


def undocumented_or_missing(monitor: dict, worker: dict, **run) -> list[str]:
    """Compare live scrapes with the README's table both ways: every row is
    exported by the daemons it names with exactly the labels it lists, and
    every exported series is in the table."""
    problems = []
    rows = readme_series()
    scraped = {"monitor": monitor, "worker": worker}
    for row in rows:
        daemons = ["monitor", "worker"] if row.source == "both" else [row.source]
        for daemon in daemons:
            families = scraped[daemon]
            if row.name not in families:
                if not optional(row, **run):
                    problems.append(f"{row.name} ({daemon}): not exported")
                continue
            labels = label_names(families[row.name])
            if labels != row.labels:
                problems.append(f"{row.name} ({daemon}): labels {sorted(labels)}, README says {sorted(row.labels)}")
    documented = {row.name for row in rows}
    for daemon, families in scraped.items():
        problems += [f"{name} ({daemon}): exported but not in the README" for name in families
                     if name.startswith("driftline_") and name not in documented]
    return problems
