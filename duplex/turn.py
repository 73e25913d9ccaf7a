"""The turn-policy interface: what a policy sees each frame and what it may decide.

Policies (``policies/``) depend on this module and :mod:`duplex.events` only. The
engine builds one :class:`PolicyInput` per 32 ms frame, strictly causally, and acts on
the returned :class:`PolicyOutput`:

* while the agent speaks: ``BARGE_IN`` cancels the reply; ``BACKCHANNEL`` is logged and
  the agent keeps talking; ``CONTINUE`` (or ``None``) changes nothing;
* while the user has the floor: ``END_OF_TURN`` starts the reply; ``HOLD`` waits;
  ``BACKCHANNEL_OPPORTUNITY`` lets the agent say "mm-hmm" in a pause (the engine plays
  it only when the user has been silent ``BACKCHANNEL_MIN_SILENCE_S``, at most once per
  ``policy.predictor.agent_backchannel_min_gap_s``, and cuts it if the user speaks
  within it).

Pause, then decide
------------------
A policy that hears speech under the agent but cannot yet tell a backchannel from a
barge-in may return ``PAUSE`` on any frame where ``agent_speaking`` is true and
``agent_paused`` is false. The engine then:

* silences the speaker from the next chunk (within one frame) and holds the play
  cursor exactly where it is; the reply stays alive (the LLM and TTS keep producing
  into the buffer), ``AgentPaused`` is emitted and ``agent_paused`` is true on every
  following frame (``agent_speaking`` stays true: the reply still holds the floor);
* on ``RESUME`` (or ``BACKCHANNEL``) while paused: plays on from the same sample
  (nothing skipped, nothing repeated, so the words heard stay exact) and emits
  ``AgentResumed``;
* on ``BARGE_IN``, paused or not: commits. The reply is cancelled, its audio flushed,
  and history keeps only what was heard before the pause; ``BargeIn.was_paused`` says
  whether it had been paused;
* on ``CONTINUE``/``None`` while paused: keeps waiting. A pause that is neither committed
  nor resumed within ``engine.pause_timeout_s`` resolves by itself on that frame: a
  barge-in if ``user_speaking`` is still true, else a resume (``AgentResumed.timeout``).

``PAUSE`` while already paused, ``RESUME`` while not paused, and either while the agent
is not speaking are ignored. Policies that never return ``PAUSE`` (``rules``,
``smart-turn``) see ``agent_paused`` false throughout and behave as before.

Who is speaking
---------------
With ``speaker.enabled`` the engine feeds the speech heard while the agent speaks or
is paused (and, with a user enrolled, every speech run) to a speaker gate
(:mod:`duplex.stages.speaker`) in the same executor hop as the policy. After the
policy decides, the engine screens its decision: a ``BARGE_IN``, ``PAUSE`` or
``END_OF_TURN`` on speech the gate confidently calls ``agent`` (echo residual) or
``other_speaker`` becomes "keep talking" (a pause is resumed) and ``OtherSpeaker`` is
emitted instead. A ``BARGE_IN`` decided before the gate's first verdict (it needs
``speaker.min_window_s`` of speech) waits for that verdict, the agent playing on (or
paused: ``speaker.hold_barge_in``); a run that ends before it is embedded as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from duplex.events import Decision

BACKCHANNEL_WORDS = frozenset(
    "mm mhm hmm mmhmm uh-huh uhhuh huh yeah yep yes yup ok okay right sure alright "
    "aha ah oh wow cool nice great gotcha true totally exactly indeed i see".split()
)
"""Words that, alone, make a typical backchannel (lower case, hyphens kept)."""

STOP_WORDS = frozenset("wait stop no sorry hold hang but excuse actually".split())
"""Words that typically open a real interruption."""

_WORD = re.compile(r"[a-z']+(?:-[a-z']+)?")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def backchannel_score(text: str) -> float:
    """Share of the words that are backchannel words (0 when there are none)."""
    ws = words(text)
    if not ws:
        return 0.0
    return sum(w in BACKCHANNEL_WORDS or w.startswith("mm") or w.startswith("hm") for w in ws) / len(ws)


def has_stop_word(text: str) -> bool:
    return any(w in STOP_WORDS for w in words(text))


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """Everything the engine knows at the end of one frame, causally.

    Audio arrays are float32, ``FRAME_SAMPLES`` long, 16 kHz.
    """

    t: float
    mic: np.ndarray
    """The microphone after echo cancellation (if any)."""
    playback: np.ndarray
    """What the agent's speaker played during this frame (the echo reference)."""
    vad: float
    user_speaking: bool
    """The VAD segmenter's state (onset needs a few frames; offset a hangover)."""
    speech_run: float
    """Seconds since the current user speech run began (0 when silent)."""
    silence: float
    """Seconds since the user's last speech frame."""
    agent_speaking: bool
    """The agent has a reply in flight whose audio is playing or about to play."""
    agent_spoken: float
    """Seconds of the current reply played so far."""
    partial: str
    """Latest ASR hypothesis of the user's current utterance ('' if none)."""
    user_turn_open: bool
    """The user has spoken since the agent last took the turn (an end of turn is due)."""
    raw_mic: np.ndarray | None = None
    """The microphone before echo cancellation, when AEC is on."""
    agent_paused: bool = False
    """The policy's ``PAUSE`` holds the reply's playback (see "Pause, then decide" above)."""
    draft: str | None = None
    """In a pause of the user's, the final transcript of the current utterance decoded
    ahead (Whisper, when the ASR has a decode-ahead final), else ``None``. Better words
    than ``partial`` for the text's end-of-utterance signal."""
    speaker: str | None = None
    """The speaker gate's label for the current speech run (``user``, ``agent``,
    ``other_speaker``, ``unknown``); ``None`` when the gate is off or has not heard this run.
    The engine acts on it after the policy (see "Who is speaking" above); a policy may read it."""
    speaker_confidence: float = 0.0
    speaker_sim_user: float | None = None
    """Running similarity to the enrolled user (1.6 s equivalent); ``None`` without enrolment."""
    speaker_sim_agent: float | None = None
    """Running similarity to the agent's own TTS voice (1.6 s equivalent)."""


@dataclass(frozen=True, slots=True)
class PolicyOutput:
    decision: Decision | None = None
    probs: dict[str, float] = field(default_factory=dict)


class TurnPolicy(Protocol):
    """A frame-by-frame turn-taking policy. Must be deterministic and causal.

    A policy that runs a model beside the frame loop (the predictor's text model) may
    have a ``wait_models`` attribute: the engine sets it True on lockstep runs (wait for
    the model: decisions are reproducible) and False on live runs (never stall a frame:
    decide once the model's answer is in).
    """

    name: str

    def reset(self) -> None:
        """Forget all state (new session)."""
        ...

    def step(self, x: PolicyInput) -> PolicyOutput: ...


def to_float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)
