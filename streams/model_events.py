"""The monitor's side of ``model-events``: promotions, rollbacks and policy changes.

Every monitor process follows every partition of ``model-events`` from its
end (no consumer group: each needs every event). A ``policy_changed`` event
reloads the model's policy; a periodic refresh from the registry heals a
missed one.
"""

from __future__ import annotations

import logging
import time

from driftline import events
from driftline.config import Settings
from driftline.events import ModelEvent
from driftline.kafka import follow_topics_async
from driftline.logs import log_event

from .stage2 import ModelEntry, ModelStage

__all__ = ["ModelEventFollower"]

log = logging.getLogger("driftline.monitor")


class ModelEventFollower:
    """Applies model events and policy changes to stage 2's models.

    Parameters
    ----------
    settings
        Connection settings (``model-events`` is ``settings.topics.model_events``).
    stage
        Stage 2: its models, policies and checkpoints.
    """

    def __init__(self, settings: Settings, stage: ModelStage):
        self.settings = settings
        self.stage = stage
        self.policies = stage.policies

    async def follow(self) -> None:
        """Follow ``model-events`` from its end, forever."""
        consumer = await follow_topics_async(self.settings, [self.settings.topics.model_events],
                                             "driftline-monitor-model-events", from_end=True)
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                changed = False
                for records in batches.values():
                    for record in records:
                        changed |= self.on_model_event(record.value)
                if changed:
                    # this follower starts at the end after a restart: save the effect now
                    await self.stage.checkpoints.checkpoint()
        finally:
            await consumer.stop()

    def on_model_event(self, payload: bytes | None) -> bool:
        """Apply model events; True when a model's monitor changed."""
        try:
            model_events = events.decode(ModelEvent, payload or b"")
        except events.ValidationError as error:
            log.warning("ignoring malformed model event: %s", error)
            return False
        changed = False
        models = self.stage.models
        for event in model_events:
            if event.event in ("policy_changed", "promoted", "rolled_back"):
                self.policies.invalidate(event.model)
            if event.event in ("promoted", "rolled_back"):
                log_event(log, "promotion" if event.event == "promoted" else "rollback", model=event.model,
                          version=event.version, alias=event.alias, request_id=event.request_id,
                          reason=event.reason)
            entry = models.get(event.model)
            if entry is None:
                continue
            if event.event == "promoted" and event.version is not None:
                entry.monitor.on_promoted(event.version, time.time())
                entry.dirty = changed = True
            elif event.event == "policy_changed":
                self._reload_policy(event.model, entry, "policy_changed")
                changed = True
        return changed

    def _reload_policy(self, model: str, entry: ModelEntry, why: str) -> None:
        from .model_monitor import ModelMonitor

        policy = self.policies.policy(model).monitor
        entry.monitor = ModelMonitor.from_state(entry.monitor.to_state(), policy, self.policies.profile_for(model))
        entry.dirty = True
        log_event(log, "policy_reloaded", model=model, trigger=why)

    async def refresh_policies(self) -> None:
        """Re-read policies from the registry: a ``policy_changed`` event
        missed while the monitor was down (or never sent) heals here."""
        models = self.stage.models
        changed = [m for m in self.policies.refresh() if m in models]
        for model in changed:
            self._reload_policy(model, models[model], "periodic_refresh")
        if changed:
            await self.stage.checkpoints.checkpoint()
