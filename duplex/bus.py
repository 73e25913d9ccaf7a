"""The event bus: how the engine tells everyone else what happened.

Subscribers are plain callables invoked synchronously, in order, on the engine's loop;
they must not block (the recorder appends to a buffered file, MQTT puts into its outbox,
the UI posts a message). :meth:`EventBus.stream` gives an async iterator over a bounded
queue for consumers that run their own task; data events are dropped (and counted)
when it is full, control events never are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from duplex.events import ControlEvent, Event

log = logging.getLogger(__name__)

Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscriber] = []
        self.dropped = 0

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        self._subs.append(fn)
        return lambda: self._subs.remove(fn) if fn in self._subs else None

    def publish(self, event: Event) -> None:
        for fn in list(self._subs):
            try:
                fn(event)
            except Exception:  # a broken subscriber must not stop the conversation
                log.exception("event subscriber %r failed on %s", fn, event.type)

    async def stream(self, maxsize: int = 1024) -> AsyncIterator[Event]:
        """Iterate events as they come; data events are dropped when ``maxsize`` are waiting."""
        q: asyncio.Queue[Event] = asyncio.Queue()

        def put(ev: Event) -> None:
            if q.qsize() >= maxsize and not isinstance(ev, ControlEvent):
                self.dropped += 1
                return
            q.put_nowait(ev)

        unsubscribe = self.subscribe(put)
        try:
            while True:
                yield await q.get()
        finally:
            unsubscribe()


class EngineControl(Protocol):
    """What outside controllers (MQTT commands, UI keys) may ask of a running engine."""

    def set_muted(self, muted: bool) -> None: ...
    def say(self, text: str) -> None:
        """Speak ``text`` as an agent turn (interrupting nothing; queued if busy)."""
        ...
    def end(self, reason: str = "ended by command") -> None: ...
    def set_policy(self, name: str) -> None: ...
