"""Interruption reports and decision diffs, computed from a session's events alone.

The report lists every user onset while the agent was speaking (what the user said,
what the policy decided, how fast, and what of the agent's reply was heard) and every
end of turn with its delay. :func:`compare_decisions` diffs two runs' decision events
(``DECISION = True``), less the fields that depend on compute speed (``NOT_COMPARED``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from duplex.events import (
    AgentStopped,
    AgentTurnEnded,
    AgentTurnStarted,
    ASRFinal,
    AudioPlayed,
    Backchannel,
    BargeIn,
    EndOfTurn,
    Event,
    OverlapIgnored,
    UserSpeechStarted,
)


_SAME_T = 1e-6


@dataclass(frozen=True)
class Overlap:
    """One user onset while the agent was speaking."""

    onset: float
    user_said: str
    decision: str
    """``barge-in``, ``backchannel`` or ``continue`` (``continue`` also when undecided)."""
    decided_at: float | None
    reaction: float | None
    """Seconds from the onset to the decision."""
    stopped_after: float | None
    """Barge-ins: seconds from the onset until the speaker was silent."""
    turn: int
    heard_before: str
    """The agent's words the user had heard when they started speaking."""
    generated: str
    """Everything the agent's reply generated (as of its end)."""
    heard: str
    """Everything of that reply that was played."""


@dataclass(frozen=True)
class TurnEnd:
    t: float
    turn: int
    delay: float
    """Seconds from the end of the user's speech to the decision."""
    user_said: str


@dataclass(frozen=True)
class Report:
    overlaps: tuple[Overlap, ...]
    end_of_turns: tuple[TurnEnd, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"overlaps": [asdict(o) for o in self.overlaps],
                "end_of_turns": [asdict(e) for e in self.end_of_turns]}

    def format(self, width: int = 100) -> str:
        """A plain-text table for the terminal."""
        lines = [f"User onsets while the agent was speaking: {len(self.overlaps)}"]
        if self.overlaps:
            lines.append(f"  {'onset':>7}  {'decision':<11}  {'react':>6}  {'stop':>6}  {'user said':<24}  agent (heard | not heard)")
            for o in self.overlaps:
                unheard = _unheard(o.generated, o.heard)
                agent = f"t{o.turn}: {_clip(o.heard_before, 28, left=True)!r}"
                if o.decision == "barge-in":
                    agent += f" | cut, never heard: {_clip(unheard, 24)!r}"
                lines.append(f"  {o.onset:7.2f}  {o.decision:<11}  {_ms(o.reaction):>6}  {_ms(o.stopped_after):>6}  "
                             f"{_clip(repr(o.user_said), 24):<24}  {agent}")
        lines.append(f"Ends of turn: {len(self.end_of_turns)}")
        if self.end_of_turns:
            lines.append(f"  {'time':>7}  {'turn':>4}  {'delay':>6}  user said")
            for e in self.end_of_turns:
                lines.append(f"  {e.t:7.2f}  {e.turn:>4}  {_ms(e.delay):>6}  {_clip(repr(e.user_said), width - 30)}")
        return "\n".join(lines)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}ms"


def _clip(s: str, n: int, left: bool = False) -> str:
    if len(s) <= n:
        return s
    return ("…" + s[-(n - 1):]) if left else (s[: n - 1] + "…")


def _unheard(generated: str, heard: str) -> str:
    return " ".join(generated.split()[len(heard.split()):])


def build_report(events: Sequence[Event]) -> Report:
    """The interruption report of one run (recorded or replayed)."""
    ev = list(events)
    ended = {e.turn: e for e in ev if isinstance(e, AgentTurnEnded)}
    stops = {e.turn: e for e in ev if isinstance(e, AgentStopped)}
    overlaps: list[Overlap] = []
    current_turn = 0
    heard_so_far: dict[int, list[str]] = {}
    for i, e in enumerate(ev):
        match e:
            case AgentTurnStarted():
                current_turn = e.turn
            case AudioPlayed() if e.turn >= 0 and e.text:
                heard_so_far.setdefault(e.turn, []).extend(e.text.split())
            case UserSpeechStarted() if e.agent_speaking:
                overlaps.append(_overlap(ev, i, e.t, current_turn, " ".join(heard_so_far.get(current_turn, [])),
                                         ended, stops))
            case _:
                pass
    eots = [TurnEnd(e.t, e.turn, e.delay, e.text) for e in ev if isinstance(e, EndOfTurn)]
    return Report(tuple(overlaps), tuple(eots))


def _overlap(ev: list[Event], i: int, onset: float, turn: int, heard_before: str,
             ended: dict[int, AgentTurnEnded], stops: dict[int, AgentStopped]) -> Overlap:
    decision, decided_at, stopped = "continue", None, None
    final: str | None = None
    partial = ""
    for e in ev[i + 1 :]:
        if isinstance(e, UserSpeechStarted):
            break
        match e:
            case BargeIn() if abs(e.onset - onset) < _SAME_T and decided_at is None:
                decision, decided_at, turn, partial = "barge-in", e.t, e.turn, e.text
                st = stops.get(e.turn)
                stopped = round(st.t - onset, 6) if st is not None else None
            case Backchannel() if e.who == "user" and abs(e.onset - onset) < _SAME_T and decided_at is None:
                decision, decided_at, partial = "backchannel", e.t, e.text
            case OverlapIgnored() if abs(e.onset - onset) < _SAME_T and decided_at is None:
                decision, decided_at, partial = "continue", e.t, e.text
            case ASRFinal() if final is None:
                final = e.text
            case _:
                pass
    said = final if final is not None else partial
    end = ended.get(turn)
    return Overlap(
        onset=round(onset, 6),
        user_said=said,
        decision=decision,
        decided_at=decided_at,
        reaction=round(decided_at - onset, 6) if decided_at is not None else None,
        stopped_after=stopped,
        turn=turn,
        heard_before=heard_before,
        generated=end.generated if end else "",
        heard=end.heard if end else "",
    )


# --- decision diffs -------------------------------------------------------------------------


def decision_lines(events: Sequence[Event]) -> list[str]:
    """The decision events as the lines replay compares (:meth:`Event.decision_key`)."""
    return [e.decision_key() for e in events if e.DECISION]


def compare_decisions(recorded: Sequence[Event], replayed: Sequence[Event], context: int = 1) -> list[str]:
    """A unified diff of two runs' decision events (empty when they agree)."""
    a, b = decision_lines(recorded), decision_lines(replayed)
    if a == b:
        return []
    return [line.rstrip("\n") for line in
            difflib.unified_diff(a, b, "recorded", "replayed", n=context, lineterm="")]
