"""From findings to what is published: cooldowns and retrain requests, in
one place for every alert kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from driftline.events import Alert, RetrainRequest, new_id
from driftline.policy import MonitorPolicy

from .base import Finding, finite_or_none

__all__ = ["AlertDispatch", "MonitorOutput"]


@dataclass
class MonitorOutput:
    """What one call produced: alerts and retrain requests to publish."""

    alerts: list[Alert] = field(default_factory=list)
    retrain_requests: list[RetrainRequest] = field(default_factory=list)

    def extend(self, other: "MonitorOutput") -> None:
        self.alerts.extend(other.alerts)
        self.retrain_requests.extend(other.retrain_requests)


class AlertDispatch:
    """Turns one model's findings into alerts and retrain requests.

    * **Cooldown**: at most one alert per (version, kind, subject) per
      ``policy.cooldown_s`` (``policy.estimated_cooldown_s`` for
      ``estimated_performance``, when set).
    * **Retrain requests**: alerts whose kind is in ``policy.retrain_on``
      produce one :class:`~driftline.events.RetrainRequest` (reason ``drift``
      when the first of them is a ``*_drift`` kind, else ``metric``), at most
      one per ``policy.retrain_cooldown_s``.

    Parameters
    ----------
    model
        The model's name.
    policy
        Its monitor policy.

    Examples
    --------
    >>> from driftline.policy import MonitorPolicy
    >>> dispatch = AlertDispatch("churn", MonitorPolicy(cooldown_s=60.0))
    >>> drift = Finding("concept_drift", "error", "adwin", 0.4, 0.1, "error rose")
    >>> out = dispatch.emit([(1, drift)], now=0.0)
    >>> [a.kind for a in out.alerts], [r.reason for r in out.retrain_requests]
    (['concept_drift'], ['drift'])
    >>> dispatch.emit([(1, drift)], now=30.0).alerts  # cooling down
    []
    """

    def __init__(self, model: str, policy: MonitorPolicy):
        self.model = model
        self.policy = policy
        self.cooldowns: dict[tuple[int, str, str], float] = {}
        self.last_retrain: float | None = None

    def forget_version(self, version: int) -> None:
        """A dropped version's cooldowns go with it."""
        self.cooldowns = {k: t for k, t in self.cooldowns.items() if k[0] != version}

    def _cooldown(self, kind: str) -> float:
        p = self.policy
        return p.estimated_cooldown_s if kind == "estimated_performance" and p.estimated_cooldown_s else p.cooldown_s

    def emit(self, findings: Sequence[tuple[int, Finding]], now: float) -> MonitorOutput:
        """Alerts for ``(version, finding)`` pairs not cooling down, and the
        retrain request they trigger."""
        out = MonitorOutput()
        if not findings:
            return out  # most calls: nothing found
        for version, f in findings:
            key = (version, f.kind, f.subject)
            last = self.cooldowns.get(key)
            if last is not None and now - last < self._cooldown(f.kind):
                continue
            self.cooldowns[key] = now
            value = finite_or_none(f.value)
            out.alerts.append(Alert(
                alert_id=new_id(), model=self.model, model_version=version, kind=f.kind, subject=f.subject,
                detector=f.detector, value=0.0 if value is None else value, threshold=finite_or_none(f.threshold),
                timestamp=now, message=f.message[:4000]))
        request = self._retrain_request(out.alerts, now)
        if request is not None:
            out.retrain_requests.append(request)
        return out

    def _retrain_request(self, alerts: list[Alert], now: float) -> RetrainRequest | None:
        p = self.policy
        triggering = [a for a in alerts if a.kind in p.retrain_on]
        if not triggering or (self.last_retrain is not None and now - self.last_retrain < p.retrain_cooldown_s):
            return None
        self.last_retrain = now
        first = triggering[0]
        return RetrainRequest(
            request_id=new_id(), model=self.model, reason="drift" if first.kind.endswith("drift") else "metric",
            timestamp=now, alert_ids=[a.alert_id for a in triggering], model_version=first.model_version,
            message="; ".join(a.message for a in triggering)[:1000])

    def to_state(self) -> dict:
        return {"cooldowns": [[v, k, s, t] for (v, k, s), t in self.cooldowns.items()],
                "last_retrain": self.last_retrain}

    @classmethod
    def from_state(cls, data: dict, model: str, policy: MonitorPolicy) -> "AlertDispatch":
        self = cls(model, policy)
        self.cooldowns = {(int(v), k, s): float(t) for v, k, s, t in data["cooldowns"]}
        self.last_retrain = data["last_retrain"]
        return self
