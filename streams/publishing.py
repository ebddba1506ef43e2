"""Sends of the monitor's stages: one producer, dead letters, the counts.

Examples
--------
>>> letter = internal_dead_letter(b"{}", KeyError("model"), "p.predictions", 0, 7)
>>> letter.reason, letter.partition, letter.offset
("<message>: could not be processed: KeyError: 'model' (got None)", 0, 7)
"""

from __future__ import annotations

import logging
from collections import defaultdict

from driftline import events, observability
from driftline.deadletters import reason_class
from driftline.events import DeadLetter
from driftline.logs import log_event

from .join import COMPONENT
from .supervision import describe_error

__all__ = ["Publisher", "internal_dead_letter"]

log = logging.getLogger("driftline.monitor")


class Publisher:
    """The monitor's sends through the faust app's producer, and what they count.

    Parameters
    ----------
    app
        The faust app (its producer exists once the app runs).
    topics
        The Driftline topic names (``settings.topics``).
    """

    def __init__(self, app, topics):
        self.app = app
        self.topics = topics
        #: what the monitor handled, by kind (dead letters, alerts, replays skipped, ...)
        self.counts: dict[str, int] = defaultdict(int)

    async def send(self, topic: str, key: bytes | None, value: bytes):
        """Send one record; returns its delivery future."""
        return await self.app.producer.send(topic, key, value, None, None, None)

    async def dead_letters(self, letters: list[DeadLetter]) -> list:
        """Send ``letters`` to the dead-letter topic, one log line each;
        returns the delivery futures."""
        futures = []
        for letter in letters:
            futures.append(await self.send(self.topics.dead_letter, letter.error_id.encode(), events.encode(letter)))
            log_event(log, "dead_letter", logging.WARNING, reason_class=reason_class(letter),
                      topic=letter.source_topic, partition=letter.partition, offset=letter.offset,
                      index=letter.index, field=letter.field, error_id=letter.error_id, reason=letter.reason)
        if letters:
            observability.EVENTS_PROCESSED.labels(COMPONENT, "dead_letter").inc(len(letters))
            observability.count_dead_letters(COMPONENT, letters)
            self.counts["dead_letter"] += len(letters)
        return futures


def internal_dead_letter(payload: bytes, error: BaseException, topic: str, partition: int | None,
                         offset: int | None, index: int | None = None) -> DeadLetter:
    """The dead letter for a message (or bulk element) whose processing
    raised: the exception, bounded, is the reason."""
    reason = events.ValidationError("<message>", None, f"could not be processed: {describe_error(error)}", index)
    return DeadLetter.for_payload(payload if isinstance(payload, bytes) else bytes(payload), reason,
                                  source_topic=topic, component=COMPONENT, partition=partition, offset=offset)
