"""The rule baseline: what practitioners ship today, on VAD runs and ASR word counts.

While the agent speaks, a user speech run becomes a barge-in once it has lasted
``barge_in_min_speech_ms`` *and* the recogniser has ``barge_in_min_words`` words that
are not all backchannel words (or a stop word such as "wait" alone); a short run
made only of backchannel words is a backchannel; anything else is ignored. A run longer
than ``backchannel_max_ms`` is a barge-in whatever its words (a user who keeps talking).
With echo cancellation on, a run only counts once a double-talk detector
(:mod:`policies.doubletalk`) hears the user's voice in it rather than residual echo;
without, ``double_talk_gate`` applies a Geigel gate (``double_talk_margin_db``).
While the user has the floor, the turn ends after ``end_of_turn_silence_ms`` of silence.
"""

from __future__ import annotations

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.config import RulesConfig
from duplex.events import Decision
from duplex.turn import PolicyInput, PolicyOutput, backchannel_score, has_stop_word, words
from policies.doubletalk import DoubleTalkConfig, DoubleTalkDetector


class RulePolicy:
    name = "rules"

    def __init__(self, cfg: RulesConfig | None = None) -> None:
        self.cfg = cfg or RulesConfig()
        self.reset()

    def reset(self) -> None:
        self._decided = False
        self._was_speaking = False
        self._last_partial = ""
        self._gated_frames = 0

    def step(self, x: PolicyInput) -> PolicyOutput:
        c = self.cfg
        decision: Decision | None = None
        if x.agent_speaking:
            if x.user_speaking:
                if not self._was_speaking:
                    self._decided = False
                self._last_partial = x.partial
                if not self._decided and self._double_talk(x):
                    n = len(words(x.partial))
                    bc = backchannel_score(x.partial)
                    long_enough = x.speech_run * 1000 >= c.barge_in_min_speech_ms
                    if x.speech_run * 1000 >= c.stop_word_min_ms and has_stop_word(x.partial):
                        decision = Decision.BARGE_IN  # "wait", "stop": one word is enough
                    elif long_enough and n >= c.barge_in_min_words and bc < 1.0:
                        decision = Decision.BARGE_IN
                    elif x.speech_run * 1000 >= c.backchannel_max_ms:
                        decision = Decision.BARGE_IN
                    if decision is not None:
                        self._decided = True
            elif self._was_speaking and not self._decided:
                # The run ended without a barge-in: a backchannel if it had words, else noise.
                decision = Decision.BACKCHANNEL if words(self._last_partial) else Decision.CONTINUE
                self._decided = True
        elif x.user_turn_open and not x.user_speaking:
            if x.silence * 1000 >= c.end_of_turn_silence_ms:
                decision = Decision.END_OF_TURN
            else:
                decision = Decision.HOLD
        self._was_speaking = x.user_speaking
        p = {"barge_in": 1.0 if decision is Decision.BARGE_IN else 0.0,
             "end_of_turn": 1.0 if decision is Decision.END_OF_TURN else 0.0}
        return PolicyOutput(decision, p)

    def _double_talk(self, x: PolicyInput) -> bool:
        """Does the current speech run sound like the user rather than the agent's echo?

        A :class:`~policies.doubletalk.DoubleTalkDetector` votes over the run's frames.
        With echo cancellation (``x.raw_mic`` set) it always runs and judges the
        canceller's echo reduction (the user's voice survives cancellation, echo does
        not); without, only with ``double_talk_gate``, as a Geigel gate
        (``double_talk_margin_db``).
        """
        if x.raw_mic is None and not self.cfg.double_talk_gate:
            return True
        dtd = getattr(self, "_dtd", None)
        if dtd is None:
            dtd = self._dtd = DoubleTalkDetector(DoubleTalkConfig(margin_db=self.cfg.double_talk_margin_db))
        return dtd.step(x)


__all__ = ["RulePolicy", "FRAME_SAMPLES", "SAMPLE_RATE"]
