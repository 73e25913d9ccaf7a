"""Who has the floor: per-turn state the engine throws away whole (Pipecat's lesson).

* :class:`UserTurn` — what the user said since the agent last took the turn: the
  utterances that belong to it, their final texts, and the speculative reply started
  on them. Opened at the user's onset, closed (and kept as the previous turn, in case
  the end of turn proves premature) at end of turn.
* :class:`Overlap` — user speech while the agent speaks, from its onset until the
  policy decides; holds the policy's pause (``Decision.PAUSE``) while it lasts.
* :class:`AgentBackchannels` — the agent's own "mm-hmm": only in a pause of the
  user's, rate-limited, cut if the user speaks again within it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from duplex.audio.player import Player, Segment, word_timing
from duplex.reply import Reply

BACKCHANNEL_MIN_SILENCE_S = 0.096
"""The agent's own "mm-hmm" plays only after this much silence from the user (in a pause)."""


@dataclass
class UserTurn:
    onset: float
    utterances: set[int] = field(default_factory=set)
    texts: list[str] = field(default_factory=list)
    """Final texts of this turn's utterances, in order."""
    speculation: Reply | None = None
    """A reply started when the user went quiet, its audio held until end of turn."""

    @property
    def text(self) -> str:
        return " ".join(self.texts).strip()

    def add_final(self, utterance: int, text: str) -> None:
        if utterance in self.utterances and text:
            self.texts.append(text)

    def draft(self, partial: str) -> str:
        """The text so far, with the partial of an utterance still running."""
        return " ".join(self.texts + ([partial] if partial else [])).strip()


@dataclass
class Overlap:
    onset: float
    paused_at: float | None = None
    """When the policy paused the reply; ``None`` while it plays."""

    def paused_for(self, t: float) -> float:
        return 0.0 if self.paused_at is None else t - self.paused_at


class AgentBackchannels:
    """Plays the agent's "mm-hmm" clip at backchannel opportunities the policy reports."""

    def __init__(self, player: Player, clip: np.ndarray | None, enabled: bool, min_gap_s: float) -> None:
        self.player = player
        self.clip = clip if enabled else None
        self.min_gap_s = min_gap_s
        self._last = -1e9
        self.playing_since: float | None = None

    def offer(self, t: float, silence: float) -> bool:
        """Play the clip now if the user is in a pause, the speaker idle and the last one old enough."""
        if self.clip is None or self.player.busy or silence < BACKCHANNEL_MIN_SILENCE_S - 1e-9:
            return False
        if t - self._last < self.min_gap_s:
            return False
        self._last = self.playing_since = t
        self.player.enqueue(Segment(-1, self.clip, "mm-hmm", word_timing("mm-hmm", self.clip), kind="backchannel"))
        return True

    def cut_if_user_speaks(self, silence: float) -> float | None:
        """The user spoke again (this frame is speech) within the clip: cut it; returns its onset."""
        onset = self.playing_since
        if onset is None:
            return None
        if self.player.playing_kind != "backchannel" and not self.player.busy:
            self.playing_since = None
            return None
        if silence == 0.0 and self.player.flush_kind("backchannel"):
            self.playing_since = None
            return onset
        return None
