"""When asynchronous results reach the frame loop: logged live, enforced on replay.

A live run never waits for its models. A speculative Whisper final (the *draft*), the
background recogniser's newest partial, the text end-of-utterance score and each chunk
of the reply's audio are used on the first frame they are ready, and which frame that is
depends on how fast the machine computed. Those are the only things a live run leaves to
chance, and :class:`Pacing` writes them down:

* results read in the listener/policy hop are used on the frame they are read;
* reply audio enters the player only at the speaker's pull (the start of a frame), and a
  reply counts as fully produced from the pull that first sees it so;
* the first frame each result was used on is logged under a key that names it the same
  way in every run (``draft:3``: the third speculation; ``partial:5:2``: the second
  partial read of utterance 5, whose value is how many frames it covers; ``seg:4:1``:
  audio chunk 1 of reply 4; ``done:4``; ``p0:eou:7``: the policy's seventh text score).

The engine publishes the log as :class:`~duplex.events.Arrived` events, so a session
records it. A replay of that session builds a replaying :class:`Pacing` from them: each
result is held back until its recorded frame and waited for there, so the replay makes
the recording's decisions exactly, whatever either machine's speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from duplex.events import Arrived, Event

T = TypeVar("T")


class Pacing:
    """The arrival log of one conversation (recording), or the plan of one (replaying).

    Thread-safe: the listener and the policy note arrivals on the executor thread, the
    engine on the loop. ``frame`` is set by the engine at the start of every tick.
    """

    def __init__(self, plan: Mapping[str, tuple[int, int]] | None = None, prefix: str = "") -> None:
        self.replaying = plan is not None
        """A replay of a recorded log: results become visible on their recorded frames."""
        self.frame = 0
        self._plan = dict(plan or {})
        self._prefix = prefix
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._new: list[tuple[int, str, int]] = []
        self._parent: Pacing | None = None
        self._queues: dict[str, list[tuple[int, str]]] = {}

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Pacing:
        """A replaying pacing from a session's :class:`Arrived` events."""
        plan = {e.key: (e.frame, e.value) for e in events if isinstance(e, Arrived)}
        return cls(plan)

    def scoped(self, prefix: str) -> Pacing:
        """A view whose keys all start with ``prefix`` (a policy switched in mid-run
        counts its results afresh without colliding with the previous policy's)."""
        view = Pacing(None, self._root()._prefix + prefix)
        view._parent = self._root()
        view.replaying = self._root().replaying
        return view

    def _root(self) -> Pacing:
        return self._parent if self._parent is not None else self

    # --- both ---------------------------------------------------------------------------

    def note(self, key: str, value: int = 0) -> None:
        """Log that ``key`` was used on the current frame (only its first use counts)."""
        root, key = self._root(), self._prefix + key
        with root._lock:
            if key in root._seen:
                return
            root._seen.add(key)
            root._new.append((root.frame, key, value))

    def drain(self) -> list[tuple[int, str, int]]:
        """The arrivals logged since the last call: (frame, key, value)."""
        root = self._root()
        with root._lock:
            out, root._new = root._new, []
        return out

    def visible(self, key: str, fetch: Callable[[bool], T | None]) -> T | None:
        """A result read in the frame hop: ``fetch(wait)`` gives it, or None while not ready.

        Recording: what is ready now (logged the first time it is). Replaying: None before
        its recorded frame; from that frame on, waited for (``fetch(True)``).
        """
        if self.replaying:
            if not self.due(key):
                return None
            result = fetch(True)
        else:
            result = fetch(False)
            if result is None:
                return None
        self.note(key)
        return result

    # --- replaying ------------------------------------------------------------------------

    def due(self, key: str) -> bool:
        """Replaying: whether ``key`` had arrived by the current frame in the recording."""
        root = self._root()
        rec = root._plan.get(self._prefix + key)
        return rec is not None and rec[0] <= root.frame

    def value(self, key: str) -> int | None:
        """Replaying: the value recorded with ``key`` (None if the recording never used it)."""
        rec = self._root()._plan.get(self._prefix + key)
        return None if rec is None else rec[1]

    def due_with(self, prefix: str) -> list[str]:
        """Replaying: keys starting with ``prefix`` that arrived by the current frame and
        were not used yet, in the order they were recorded."""
        root = self._root()
        p = self._prefix + prefix
        with root._lock:
            queue = root._queues.get(p)
            if queue is None:
                # Recorded order within a frame, earliest frame first; popped from the end.
                queue = sorted(((f, k) for k, (f, _) in root._plan.items() if k.startswith(p)), key=lambda e: e[0])
                queue.reverse()
                root._queues[p] = queue
            out: list[str] = []
            while queue and queue[-1][0] <= root.frame:
                k = queue.pop()[1]
                if k not in root._seen:
                    out.append(k[len(self._prefix):])
        return out
