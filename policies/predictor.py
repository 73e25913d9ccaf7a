"""The predictor policy: the duplex Transformer, run causally every 32 ms frame, fused
with what the words say.

Each frame, :class:`policies.features.Featurizer` turns the engine's
:class:`duplex.turn.PolicyInput` into one feature vector and
:class:`policies.model.StreamingPredictor` (numpy, KV cache of the last ``window``
frames) gives both heads' probabilities. The decisions on top (v2):

* **agent speaking: pause, then decide.** A user sound under the agent pauses the agent
  (``PAUSE``: playback holds, the reply stays) once it has lasted ``pause_run_s`` and the
  model gives it ``p(barge_in) >= pause_prob`` or a word that is not a backchannel word
  has been heard, unless its words so far are all backchannel words. It is committed (``BARGE_IN``) once the evidence is clear: a stop
  word, ``content_words`` words that are not backchannel words, ``p(barge_in) >=
  commit_prob``, or a sound longer than ``commit_run_s`` (``bc_commit_run_s`` when every
  word is a backchannel word). A sound that ends before that is a backchannel: the agent
  resumes from the same sample (``BACKCHANNEL`` doubles as the resume) or never paused.
* **user's floor: end of turn by evidence, not by a fixed wait.** A logistic fusion of the
  model's ``p(end_of_turn)``, the text's completeness (the chat model's probability that
  the user's message ends after the words so far, :mod:`duplex.stages.eou`), a trailing
  word that asks for more (``and``, ``the``, ``um``) and the silence so far; the turn ends
  when it reaches ``eot_threshold`` for two silent frames, after ``min_silence_s``, or
  after ``max_silence_ms`` whatever it says.
  ``BACKCHANNEL_OPPORTUNITY`` in a pause the model rates so (rate-limited).

The decision parameters ship with the weights (``predictor.json``, key ``decision``);
they are tuned on generated dev conversations, never on the real recordings.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from duplex.config import PredictorConfig
from duplex.errors import DuplexError, PolicyError
from duplex.events import Decision
from duplex.pacing import Pacing
from duplex.stages.eou import TextEndOfUtterance
from duplex.audio import FRAME_MS
from duplex.audio.wav import level_db
from duplex.turn import BACKCHANNEL_WORDS, PolicyInput, PolicyOutput, has_stop_word, words
from policies.features import CONTINUATION_WORDS, FEATURE_NAMES, Featurizer
from policies.smart_turn import SmartTurnModel

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "predictor.pt"
REARM_FRAMES = 10
"""After a barge-in, the next one needs a new user sound: this many frames without the
user's voice first (with a loud echo the VAD never goes quiet while the agent talks)."""
PLAYBACK_SILENT_DB = -60.0
EOT_FRAMES = 2
"""Consecutive silent frames at or above the end-of-turn threshold before the turn ends."""
FRAME_S = FRAME_MS / 1000
NEAR_END_MARGIN_DB = 10.0
"""A frame is the user's voice, not the agent's echo, when the microphone is this much above
the echo the agent's playback would leave (the running echo-return estimate)."""
ECHO_ONLY_PROB = 0.9
"""The model's ``p(continue)`` above which a frame is taken as the agent's echo alone."""
ERL_INIT_DB = -60.0
ERL_DECAY_DB = 0.15
"""The echo-return envelope falls this much per agent-only frame (about 5 dB/s), so with
headphones it reaches the noise floor within a few seconds of the agent talking."""
ERL_FLOOR_DB = -60.0
ECHO_SPAN_FRAMES = 8
"""Frames (256 ms) of playback an echo may still be sounding from (delay plus reverberation)."""
"""Echo return (mic minus playback, dB) assumed until frames of the agent alone measure it."""
SOUND_END_S = 0.25
"""A user sound under the agent is over after this long without the user's voice."""
SHORT_BARGE_MIN_S = 0.15
"""A sound that ends before any commit rule fired is still a barge-in ("stop", "no, wait")
if at least this much of it was the user's own voice."""
"""A user sound during agent speech is over after this much silence (then it is classified)."""
AGENT_PROBS = ("continue", "backchannel", "barge_in")
USER_PROBS = ("hold", "end_of_turn", "backchannel_opportunity")


@dataclass(frozen=True)
class DecisionParams:
    """The decision layer's parameters (see the module docstring)."""

    pause_prob: float = 0.5
    pause_run_s: float = 0.2
    commit_prob: float = 0.97
    commit_min_run_s: float = 0.3
    commit_run_s: float = 1.0
    bc_commit_run_s: float = 1.6
    content_words: int = 2
    stop_word_run_s: float = 0.4
    backchannel_prob: float = 0.35
    near_end_gate: bool = True
    """Count only frames that are the user's voice, not the agent's echo (v1 counted any)."""
    bc_veto_prob: float = 0.8
    """Once the model has rated the sound a backchannel this surely, its words (often a
    recogniser's guess at a murmur: "mm-hmm" heard as "an eye on") neither pause nor
    commit; only its length or the model's own barge-in probability can."""
    bco_prob: float = 0.6
    bco_margin: float = 0.0
    """A mid-thought pause is a backchannel opportunity too: ``bco_silence_s`` into a pause,
    after ``bco_min_speech_s`` of the user's speech since the turn began (or the agent's
    last "mm-hmm"), when the fused end-of-turn evidence stands at least this far under its
    threshold (the user is sure to go on). 0 turns the rule off (the model's head alone)."""
    bco_silence_s: float = 0.25
    bco_min_speech_s: float = 3.0
    # End of turn: z = b + w_model*logit(p_eot) + w_text*logit(p_text) + w_cont*cont + w_sil*silence
    eot_bias: float = -3.0
    eot_w_model: float = 0.6
    eot_w_text: float = 0.8
    eot_w_cont: float = -2.0
    eot_w_silence: float = 6.0
    eot_threshold: float = 0.0
    min_silence_s: float = 0.1
    eot_w_audio: float = 0.0
    """Weight of the audio's completeness (smart-turn v3.2 over the user's turn, logit)."""
    audio_trigger_s: float = 0.1
    """Silence after which the audio's completeness is scored (once per pause)."""

    @classmethod
    def v1(cls, meta: dict) -> DecisionParams:
        """The decision rules the first shipped predictor used, on its tuned thresholds.

        A barge-in as soon as ``p(barge_in)`` reaches its threshold (no pause, no words,
        no duration), an end of turn as soon as ``p(end_of_turn)`` does: kept so that
        the benchmark can show v1 and v2 side by side on the same weights.
        """
        thr = {"barge_in": 0.5, "backchannel": 0.5, "end_of_turn": 0.5, **meta.get("thresholds", {})}
        never = 1e9
        return cls(pause_prob=2.0, commit_prob=float(thr["barge_in"]), commit_min_run_s=0.0, commit_run_s=never,
                   bc_commit_run_s=never, content_words=10**6, stop_word_run_s=never,
                   backchannel_prob=float(thr["backchannel"]), bc_veto_prob=2.0, near_end_gate=False, eot_bias=-logit(float(thr["end_of_turn"])),
                   eot_w_model=1.0, eot_w_text=0.0, eot_w_cont=0.0, eot_w_silence=0.0, eot_threshold=0.0,
                   min_silence_s=float(thr.get("end_of_turn_min_silence_ms", 0)) / 1000)

    @classmethod
    def from_meta(cls, meta: dict) -> DecisionParams:
        known = {f.name for f in fields(cls)}
        types = {f.name: f.type for f in fields(cls)}
        cast = {"int": int, "bool": bool}
        return cls(**{k: cast.get(str(types[k]), float)(v) for k, v in meta.get("decision", {}).items() if k in known})


def _is_backchannel(word: str) -> bool:
    return word in BACKCHANNEL_WORDS or word.startswith(("mm", "hm"))


def logit(p: float, eps: float = 1e-4) -> float:
    """log(p / (1 - p)), with ``p`` kept ``eps`` away from 0 and 1."""
    p = min(1.0 - eps, max(eps, p))
    return math.log(p / (1.0 - p))


class TextScorer:
    """The text end-of-utterance probability (``None`` when disabled or unavailable).

    The model loads when the policy is built (off the event loop: policies are built by
    the model loader or an executor), so the first pause of a conversation does not
    stall a frame while llama.cpp maps the weights.

    ``wait`` (lockstep runs) scores on the caller's thread. Live runs never wait: every
    text of the user's turn goes to the scorer's background thread as it appears
    (:meth:`prefetch`), and :meth:`score` answers *pending* until its text is scored.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._model: TextEndOfUtterance | None = None
        self._failed = False
        if enabled:
            self._load()

    def _load(self) -> None:
        try:
            self._model = _load_text_eou()
        except DuplexError as exc:
            log.warning("text end-of-utterance unavailable, audio only: %s", exc)
            self._failed = True

    def __call__(self, text: str) -> float | None:
        return self.score(text, wait=True)[0]

    def score(self, text: str, wait: bool) -> tuple[float | None, bool]:
        """``(p, pending)``: the probability (None: no model or no words) and, when not
        waiting, whether it is still being computed."""
        if self._model is None or not text:
            return None, False
        if wait:
            return self._model(text), False
        p = self._model.peek(text)
        if p is None:
            self._model.submit(text)
        return p, p is None

    def prefetch(self, text: str) -> None:
        """Start scoring ``text`` in the background (live runs, while the user speaks)."""
        if self._model is not None and text:
            self._model.submit(text)


@functools.lru_cache(maxsize=1)
def _load_text_eou() -> TextEndOfUtterance:
    """One shared scorer per process (it memoises, and its model takes ~100 MB)."""
    return TextEndOfUtterance()


class AudioScorer:
    """The audio end-of-utterance probability: smart-turn v3.2 on the user's turn so far.

    smart-turn (pipecat's open turn detector, a Whisper-tiny encoder trained on real
    speech, BSD-2-Clause) ships inside the ``pipecat-ai`` wheel. The predictor scores the
    last 8 s of the user's turn once per pause (``audio_trigger_s`` into the silence),
    50-90 ms on one core, in the policy's executor hop; scores are memoised on the
    audio's bytes (threshold sweeps replay the same pauses). ``None`` when disabled or the
    model is not installed.
    """

    PRE_S = 0.5
    WINDOW_FRAMES = int((8.0 + PRE_S) * 1000 / FRAME_MS) + 1

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._model: SmartTurnModel | None = None
        if enabled:
            try:
                self._model = _load_smart_turn()
            except DuplexError as exc:
                log.warning("audio end-of-utterance unavailable: %s", exc)
        self._memo: dict[bytes, float] = {}

    def __call__(self, frames: Sequence[np.ndarray]) -> float | None:
        if self._model is None or not frames:
            return None
        audio = np.concatenate(frames)
        key = hashlib.blake2b(audio.tobytes(), digest_size=16).digest()
        p = self._memo.get(key)
        if p is None:
            if len(self._memo) > 4096:
                self._memo.clear()
            p = self._memo[key] = self._model(audio)
        return p


@functools.lru_cache(maxsize=1)
def _load_smart_turn() -> SmartTurnModel:
    return SmartTurnModel()


def load_weights(path: str | Path = "") -> tuple[object, dict]:
    """Load ``predictor.pt`` and its ``predictor.json``; returns (StreamingPredictor, meta).

    Raises:
        PolicyError: the files are missing or do not match this code's features/model.
    """
    import torch

    from policies.model import ModelConfig, StreamingPredictor

    p = Path(path) if path else DEFAULT_WEIGHTS
    meta_path = p.with_suffix(".json")
    if not p.exists() or not meta_path.exists():
        raise PolicyError(f"predictor weights not found: {p} (train them with: python -m policies.train)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        state = torch.load(p, map_location="cpu", weights_only=True)
        cfg = ModelConfig(**meta["model"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise PolicyError(f"cannot load predictor weights {p}: {exc}") from exc
    if tuple(meta.get("features", ())) != FEATURE_NAMES:
        raise PolicyError(f"predictor weights {p} were trained on other features; retrain (python -m policies.train)")
    try:
        return StreamingPredictor(cfg, state), meta
    except KeyError as exc:
        raise PolicyError(f"predictor weights {p} lack tensor {exc}; retrain") from exc


class PredictorPolicy:
    """The trained duplex predictor behind the :class:`duplex.turn.TurnPolicy` protocol."""

    name = "predictor"

    def __init__(self, cfg: PredictorConfig | None = None, params: DecisionParams | None = None,
                 text_eou: bool | None = None, audio_eou: bool | None = None) -> None:
        self.cfg = cfg or PredictorConfig()
        self.model, self.meta = load_weights(self.cfg.weights)
        d = params or DecisionParams.from_meta(self.meta)
        c = self.cfg
        # Explicit config thresholds (> 0) override the shipped ones.
        if c.barge_in_threshold > 0:
            d = replace(d, pause_prob=c.barge_in_threshold)
        if c.backchannel_threshold > 0:
            d = replace(d, backchannel_prob=c.backchannel_threshold)
        if c.end_of_turn_threshold > 0:
            d = replace(d, eot_threshold=logit(c.end_of_turn_threshold))
        if c.backchannel_opportunity_threshold > 0:
            d = replace(d, bco_prob=c.backchannel_opportunity_threshold)
        if c.end_of_turn_min_silence_ms >= 0:
            d = replace(d, min_silence_s=c.end_of_turn_min_silence_ms / 1000)
        self.params = d
        self.text = TextScorer(self.meta.get("text_eou", True) if text_eou is None else text_eou)
        self.audio = AudioScorer(bool(self.meta.get("audio_eou", False)) if audio_eou is None else audio_eou)
        self.features = Featurizer()
        self.wait_models = True
        """Lockstep runs wait for the text model; the engine clears this on live runs, where
        the words are scored beside the frame loop and the end of turn waits for their score."""
        self.pacing: Pacing | None = None
        """Live runs and replays of them (set by the engine): logs, or replays, the frame
        each text score was first used on (:mod:`duplex.pacing`)."""
        self.reset()

    def reset(self) -> None:
        self.model.reset()
        self.features.reset()
        self.reset_decisions()

    def step(self, x: PolicyInput) -> PolicyOutput:
        pa, pu = self.model.step(self.features(x))
        return self.decide(x, pa, pu)

    def reset_decisions(self) -> None:
        """Forget the decision state only (threshold search replays stored probabilities)."""
        self._eou_text: str | None = None
        self._eou_asks = 0
        self._latched = False
        self._sound = False
        self._bc_peak = 0.0
        self._b_peak = 0.0
        self._last_bco = -1e9
        self._bco_pause = False
        self._turn_speech = 0.0
        self._eot_run = 0
        self._runs: list[str] = []
        self._cur = ""
        self._draft = ""
        self._erl = ERL_INIT_DB
        self._play_hist: deque[float] = deque(maxlen=ECHO_SPAN_FRAMES)
        self._mic_hist: deque[np.ndarray] = deque(maxlen=AudioScorer.WINDOW_FRAMES)
        self._turn_frames = 0
        self._text_pending = False
        self._prefetched = ""
        self._p_audio: float | None = None
        self._near = 0.0
        self._far_frames = 0

    def decide(self, x: PolicyInput, pa: np.ndarray, pu: np.ndarray) -> PolicyOutput:
        """The decision rules on one frame's probabilities (agent head ``pa``, user head ``pu``)."""
        probs = {k: float(v) for k, v in zip(AGENT_PROBS, pa, strict=True)}
        probs.update({k: float(v) for k, v in zip(USER_PROBS, pu, strict=True)})
        self._track_words(x)
        self._track_audio(x)
        if not self.wait_models and x.user_turn_open and not x.agent_speaking and self.params.eot_w_text:
            text = self.turn_text
            if text != self._prefetched:
                self._prefetched = text
                self.text.prefetch(text)
        decision: Decision | None = None
        if x.agent_speaking:
            decision = self._agent_turn(x, probs)
        else:
            self._latched = False
            self._sound = False
            self._bc_peak = self._b_peak = self._near = 0.0
            if not x.user_turn_open:
                self._turn_speech = 0.0
            if x.user_turn_open:
                decision = self._user_turn(x, probs)
        # Thresholds travel with the probabilities (the TUI draws them from the events).
        probs["thr_barge_in"] = self.params.pause_prob
        probs["thr_backchannel"] = self.params.backchannel_prob
        probs["thr_backchannel_opportunity"] = self.params.bco_prob
        return PolicyOutput(decision, probs)

    def _track_words(self, x: PolicyInput) -> None:
        """The user's words this turn: earlier speech runs' last partials, then the current one."""
        if not x.user_turn_open and not x.agent_speaking:
            self._runs, self._cur, self._draft = [], "", ""
            return
        if x.user_speaking and x.speech_run <= 0.04 and (self._cur or self._draft):
            self._runs.append(self._draft or self._cur)
            self._cur = self._draft = ""
        if x.partial:
            self._cur = x.partial
        if x.draft:
            # Whisper's decode-ahead of this utterance: better words than the partials'.
            self._draft = x.draft
        elif x.silence <= 0.0:
            self._draft = ""  # the user went on: the draft no longer covers the utterance

    def _track_audio(self, x: PolicyInput) -> None:
        """The microphone since the user's turn opened (and half a second before), for smart-turn."""
        if not self.audio.enabled:
            return
        self._mic_hist.append(np.asarray(x.mic, dtype=np.float32))
        if x.user_turn_open and not x.agent_speaking:
            self._turn_frames += 1
        else:
            self._turn_frames = 0
        if x.silence <= 0.0:
            self._p_audio = None  # a new pause is scored afresh

    def turn_audio_prob(self, x: PolicyInput) -> float | None:
        """smart-turn's probability that the turn is complete, once ``audio_trigger_s`` into a pause."""
        if self._p_audio is None and x.silence >= self.params.audio_trigger_s:
            n = min(len(self._mic_hist), self._turn_frames + int(AudioScorer.PRE_S * 1000 / FRAME_MS))
            self._p_audio = self.audio(list(self._mic_hist)[-n:])
        return self._p_audio

    @property
    def turn_text(self) -> str:
        return " ".join([*self._runs, self._draft or self._cur]).strip()

    # --- while the agent speaks ------------------------------------------------------------

    def _near_end(self, x: PolicyInput, p: dict[str, float]) -> bool:
        """Is this frame the user's voice rather than the agent's echo (adaptive Geigel)?

        While the agent plays and nobody else is heard (the VAD is quiet, or the model is
        sure nothing is happening: a loud echo keeps the VAD on), the frame measures the
        echo return (microphone minus playback, dB, tracking its upper envelope). A frame
        is near-end when the playback is silent, the microphone stands
        ``NEAR_END_MARGIN_DB`` above that echo, or the model is sure it hears a barge-in
        (``commit_prob``: an echo louder than the user defeats any level test). With
        headphones the echo return is the noise floor and every voiced frame counts; on an
        open speaker the echo alone does not.
        """
        # The loudest playback of the echo path's span: a reverberant, delayed echo still
        # sounds after the syllable that made it.
        self._play_hist.append(level_db(x.playback))
        play = max(self._play_hist)
        if not self.params.near_end_gate:
            return x.user_speaking
        voiced = x.user_speaking and x.vad >= 0.5  # not the VAD's hangover
        if play < PLAYBACK_SILENT_DB:
            return voiced
        mic = level_db(x.mic)
        if (not x.user_speaking and x.vad < 0.3) or p["continue"] >= ECHO_ONLY_PROB:
            self._erl = max(self._erl - ERL_DECAY_DB, 0.7 * self._erl + 0.3 * (mic - play), ERL_FLOOR_DB)
            return False
        return voiced and (mic - play > self._erl + NEAR_END_MARGIN_DB or p["barge_in"] >= self.params.commit_prob)

    def _commit(self, x: PolicyInput, p: dict[str, float], content: int, bc_only: bool) -> bool:
        d = self.params
        run = self._near
        if run >= d.stop_word_run_s and has_stop_word(x.partial):
            return True
        vetoed = self._bc_peak >= d.bc_veto_prob
        if run >= d.commit_min_run_s and ((content >= d.content_words and not vetoed) or p["barge_in"] >= d.commit_prob):
            return True
        return run >= (d.bc_commit_run_s if bc_only else d.commit_run_s)

    def _agent_turn(self, x: PolicyInput, p: dict[str, float]) -> Decision | None:
        d = self.params
        near = self._near_end(x, p)
        self._far_frames = 0 if near else self._far_frames + 1
        if self._latched:
            # One barge-in per user sound: re-armed once the user's voice has been gone a
            # while (the VAD alone may never go quiet: a loud echo keeps it on).
            if self._far_frames >= REARM_FRAMES:
                self._latched = False
                self._near = 0.0
            return None
        if near:
            self._near += FRAME_S
            self._sound = True
            self._bc_peak = max(self._bc_peak, p["backchannel"])
            self._b_peak = max(self._b_peak, p["barge_in"])
        if not self._sound:
            return None  # echo or noise so far: nothing of the user's yet
        if self._far_frames * FRAME_S < SOUND_END_S:
            ws = words(x.partial)
            bc_only = bool(ws) and all(_is_backchannel(w) for w in ws)
            content = sum(1 for w in ws if not _is_backchannel(w))
            if self._commit(x, p, content, bc_only):
                self._latched = True
                self._sound = False
                self._bc_peak = self._b_peak = 0.0
                return Decision.BARGE_IN
            unsure = p["barge_in"] >= d.pause_prob or (content > 0 and self._bc_peak < d.bc_veto_prob)
            if not x.agent_paused and self._near >= d.pause_run_s and unsure and not bc_only:
                return Decision.PAUSE
            return None
        # The user's voice ended before the evidence was clear: a short "stop" or "no, wait"
        # is still a barge-in; anything else a backchannel (resuming a paused agent) or noise.
        self._sound = False
        near_s, self._near = self._near, 0.0
        peak, self._bc_peak = self._bc_peak, 0.0
        self._b_peak = 0.0
        ws = words(x.partial)
        if near_s >= SHORT_BARGE_MIN_S and has_stop_word(x.partial):
            self._latched = True
            return Decision.BARGE_IN
        if x.agent_paused or peak >= d.backchannel_prob or ws:
            return Decision.BACKCHANNEL  # also resumes a paused agent from the same sample
        return Decision.CONTINUE

    # --- while the user has the floor ------------------------------------------------------------

    def _text_score(self, text: str) -> tuple[float | None, bool]:
        """The text model's ``(p, pending)`` for ``text``; on a paced run, pending until
        the frame the score was (live) or is to be (replay) first used."""
        pacing = self.pacing
        if pacing is None:
            return self.text.score(text, wait=self.wait_models)
        if text != self._eou_text:
            self._eou_text = text
            self._eou_asks += 1

        def fetch(wait: bool) -> tuple[float | None, bool] | None:
            got = self.text.score(text, wait=wait)
            return None if got[1] else got

        got = pacing.visible(f"eou:{self._eou_asks}", fetch)
        return got if got is not None else (None, True)

    def eot_score(self, x: PolicyInput, p: dict[str, float]) -> float:
        """The fused end-of-turn evidence (logit scale; the turn ends at ``eot_threshold``)."""
        d = self.params
        text = self.turn_text
        p_text, self._text_pending = None, False
        if x.silence > 0 and d.eot_w_text:
            p_text, self._text_pending = self._text_score(text)
        ws = words(text)
        cont = float(bool(ws) and ws[-1] in CONTINUATION_WORDS)
        z = d.eot_bias + d.eot_w_model * logit(p["end_of_turn"]) + d.eot_w_cont * cont
        z += d.eot_w_silence * min(x.silence, 2.0)
        if p_text is not None:
            z += d.eot_w_text * logit(p_text)
            p["text_end"] = p_text
        p_audio = self.turn_audio_prob(x) if self.audio.enabled else None
        if p_audio is not None:
            z += d.eot_w_audio * logit(p_audio)
            p["audio_end"] = p_audio
        return z

    def _user_turn(self, x: PolicyInput, p: dict[str, float]) -> Decision:
        d = self.params
        if x.silence <= 0.0:
            self._bco_pause = False
            self._eot_run = 0
            if x.user_speaking:
                self._turn_speech += FRAME_S
            return Decision.HOLD
        z = self.eot_score(x, p)
        p["eot_fused"] = 1.0 / (1.0 + math.exp(-min(40.0, max(-40.0, z - d.eot_threshold))))
        # A live run decides on the same evidence a lockstep run does: not before the
        # words' score is in (the safety net below still ends the turn).
        ready = z >= d.eot_threshold and x.silence >= d.min_silence_s and not self._text_pending
        self._eot_run = self._eot_run + 1 if ready else 0
        if x.silence * 1000 >= self.cfg.max_silence_ms or self._eot_run >= EOT_FRAMES:
            self._eot_run = 0
            return Decision.END_OF_TURN
        mid_thought = (
            d.bco_margin > 0
            and d.bco_silence_s <= x.silence < d.bco_silence_s + FRAME_S
            and self._turn_speech >= d.bco_min_speech_s
            and z <= d.eot_threshold - d.bco_margin
            and not self._text_pending
        )
        if (
            self.cfg.agent_backchannels
            and not self._bco_pause
            and (p["backchannel_opportunity"] >= d.bco_prob or mid_thought)
            and x.t - self._last_bco >= self.cfg.agent_backchannel_min_gap_s
        ):
            self._bco_pause = True
            self._last_bco = x.t
            self._turn_speech = 0.0
            return Decision.BACKCHANNEL_OPPORTUNITY
        return Decision.HOLD


__all__ = ["DecisionParams", "PredictorPolicy", "load_weights"]
