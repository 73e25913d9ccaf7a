"""The outbox: messages wait here until the broker acknowledges them.

Bounded and never blocking: :meth:`Outbox.put` is called from event-bus subscribers on
the audio loop, so when the broker has been away long enough to fill it, the oldest
message is dropped and counted instead of making anyone wait. Three kinds are never
dropped: the head once a send has started (it has a sequence number and may already
have been delivered), the newest queued state message (the retained state must end up
right) and drop reports. The bridge turns the count of drops into an ``outbox_dropped``
event sent ahead of what is left, so consumers learn that messages are missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from duplex.mqtt.payloads import STATE, OutMessage

log = logging.getLogger(__name__)

DROP_REPORT = "outbox_dropped"


@dataclass(frozen=True, slots=True)
class DropReport:
    count: int
    first_ts: str
    last_ts: str


class Outbox:
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"outbox size must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._q: deque[OutMessage] = deque()
        self._locked: OutMessage | None = None
        self._newest_state: OutMessage | None = None
        self._nonempty = asyncio.Event()
        self.dropped = 0
        """Messages dropped since the outbox was made."""
        self._unreported: DropReport | None = None

    def __len__(self) -> int:
        return len(self._q)

    @property
    def has_state(self) -> bool:
        """A state message is waiting (so the state topic will be brought up to date)."""
        return self._newest_state is not None

    def put(self, msg: OutMessage) -> None:
        """Queue ``msg`` at the tail; if full, drop the oldest droppable message. Never blocks."""
        previous_state = self._newest_state
        if msg.type == STATE:
            self._newest_state = msg  # so the state it supersedes may be dropped to make room
        if len(self._q) >= self.maxsize:
            victim = self._victim()
            if victim is None:  # everything queued is protected: the newcomer goes
                self._newest_state = previous_state
                self._count_drop(msg)
                return
            del self._q[victim]
        self._q.append(msg)
        self._nonempty.set()

    def push_front(self, msg: OutMessage) -> None:
        """Queue ``msg`` ahead of everything (drop reports); allowed past ``maxsize``."""
        assert self._locked is None, "cannot jump ahead of a message being sent"
        self._q.appendleft(msg)
        self._nonempty.set()

    def head(self) -> OutMessage | None:
        """The next message to send; from now on it is locked at the head until :meth:`ack`."""
        if not self._q:
            return None
        self._locked = self._q[0]
        return self._locked

    def ack(self, msg: OutMessage) -> None:
        """The broker acknowledged the head: remove it."""
        assert self._q and self._q[0] is msg, "ack of a message that is not the head"
        self._q.popleft()
        self._locked = None
        if msg is self._newest_state:
            self._newest_state = None

    async def wait(self) -> None:
        """Return when a message is waiting or :meth:`wake` was called."""
        if not self._q:
            await self._nonempty.wait()
        self._nonempty.clear()

    def wake(self) -> None:
        """Make a pending :meth:`wait` return (the bridge is closing, or has other work)."""
        self._nonempty.set()

    def take_drop_report(self) -> DropReport | None:
        """Drops not yet reported (and forget them), or ``None``."""
        report, self._unreported = self._unreported, None
        return report

    def _victim(self) -> int | None:
        for i, m in enumerate(self._q):
            if m is self._locked or m is self._newest_state or m.type == DROP_REPORT:
                continue
            self._count_drop(m)
            return i
        return None

    def _count_drop(self, msg: OutMessage) -> None:
        self.dropped += 1
        r = self._unreported
        if r is None:  # once per episode, not once per message
            log.warning("MQTT outbox full (%d messages): dropping the oldest until the broker is back", self.maxsize)
            self._unreported = DropReport(1, msg.ts, msg.ts)
        else:
            self._unreported = DropReport(r.count + 1, min(r.first_ts, msg.ts), max(r.last_ts, msg.ts))
