"""A session as an evaluation case: stereo WAV + labelled-event TSV (the interchange format).

``OUT.wav``: stereo 16 kHz PCM16, channel 0 the agent's playback, channel 1 the mic.
``OUT.tsv``: ``start_s<TAB>end_s<TAB>label`` per line, labels as :mod:`policies.harness`
reads them. The labels come from what the recorded agent decided, so review them
before treating them as ground truth:

* a user onset while the agent spoke: ``barge_in`` (the agent stopped), ``backchannel``
  (it called it one) or ``noise`` (it let it pass), from the onset to the end of that
  speech run;
* an end of turn that got a reply: ``end_of_turn`` from the moment the user stopped
  speaking to the agent's first audio;
* a pause the user resumed from (including a premature end of turn whose reply was
  dropped because the user went on): ``hold`` from the stop to the resumption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duplex.audio.wav import to_pcm16
from duplex.config import VADConfig, field_range
from duplex.errors import SessionError
from duplex.events import (
    AudioPlayed,
    Backchannel,
    BargeIn,
    EndOfTurn,
    Event,
    Notice,
    UserSpeechEnded,
    UserSpeechStarted,
)
from duplex.session.store import Session

LABELS = ("backchannel", "barge_in", "noise", "end_of_turn", "hold", "other_speaker")
"""Case labels. ``other_speaker``: a voice that is not the user's (a TV, another person) while
the agent speaks: it must not barge in (see ``benchmarks/speaker_gate.py``)."""
DEFAULT_HANGOVER_S = 0.192
_RESUMED = "user resumed before the reply started"


@dataclass(frozen=True, slots=True)
class Label:
    start: float
    end: float
    label: str


def session_labels(events: Sequence[Event], hangover_s: float = DEFAULT_HANGOVER_S, end_s: float | None = None) -> list[Label]:
    """Labelled events from a run's decisions (see the module docstring)."""
    ev = list(events)
    horizon = end_s if end_s is not None else (ev[-1].t if ev else 0.0)
    out: list[Label] = []
    resumed_at = [e.t for e in ev if isinstance(e, Notice) and e.message.startswith(_RESUMED)]
    first_audio: dict[int, float] = {}
    for e in ev:
        if isinstance(e, AudioPlayed) and e.turn >= 0 and e.n_samples and e.turn not in first_audio:
            first_audio[e.turn] = e.t
    speech_end: float | None = None  # the user's last stop, while their turn is open
    overlap = False  # the current speech run is over the agent (and not a barge-in)
    for i, e in enumerate(ev):
        match e:
            case UserSpeechStarted() if e.agent_speaking:
                out.append(_overlap_label(ev, i, e.t, hangover_s, horizon))
                overlap = True
            case UserSpeechStarted():
                if speech_end is not None and e.t > speech_end:
                    out.append(Label(speech_end, e.t, "hold"))
                speech_end = None
            case BargeIn():
                overlap = False  # the run is the user's turn now
            case UserSpeechEnded() if overlap:
                overlap = False
            case UserSpeechEnded():
                speech_end = max(0.0, e.t - hangover_s)
            case EndOfTurn():
                stop = max(0.0, e.t - e.delay)
                resumed = next((r for r in resumed_at if r > e.t and r <= first_audio.get(e.turn, horizon)), None)
                if resumed is not None:
                    speech_end = stop  # the user went on: this pause was a hold (added at the onset)
                elif e.text:
                    out.append(Label(stop, max(e.t, first_audio.get(e.turn, e.t)), "end_of_turn"))
                    speech_end = None
                else:
                    speech_end = stop
            case _:
                pass
    return sorted(out, key=lambda x: (x.start, x.end))


def _overlap_label(ev: list[Event], i: int, onset: float, hangover_s: float, horizon: float) -> Label:
    label, end = "noise", None
    for e in ev[i + 1 :]:
        match e:
            case BargeIn() if abs(e.onset - onset) < 1e-6:
                label = "barge_in"
            case Backchannel() if e.who == "user" and abs(e.onset - onset) < 1e-6 and label == "noise":
                label = "backchannel"
            case UserSpeechEnded() if end is None:
                end = max(onset, e.t - hangover_s)  # the decision on a run may come just after it
            case UserSpeechStarted():
                end = e.t if end is None else end
                break
            case _:
                pass
    return Label(onset, horizon if end is None else end, label)


def export_case(session: Session, out: str | Path) -> tuple[Path, Path, list[Label]]:
    """Write ``OUT.wav`` and ``OUT.tsv``; returns their paths and the labels."""
    import soundfile as sf

    out = Path(out)
    if out.suffix in (".wav", ".tsv"):
        out = out.with_suffix("")
    wav, tsv = Path(f"{out}.wav"), Path(f"{out}.tsv")
    hang = (session.config.get("vad") or {}).get("hangover_ms", DEFAULT_HANGOVER_S * 1000)
    allowed = field_range(VADConfig, "hangover_ms")
    assert allowed is not None
    if isinstance(hang, bool) or not isinstance(hang, (int, float)) or not allowed.allows(hang):
        raise SessionError(f"{session.path / 'session.json'}: config vad.hangover_ms must be "
                           f"{allowed.describe()}, got {hang!r}")
    labels = session_labels(session.events, hang / 1000, session.duration)
    pcm = np.stack([np.frombuffer(to_pcm16(session.agent), "<i2"), np.frombuffer(to_pcm16(session.mic), "<i2")], axis=1)
    try:
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(wav), pcm, 16_000, subtype="PCM_16")
        lines = [f"# exported from {session.path.name}: labels are the recorded agent's decisions; review them",
                 *(f"{x.start:.3f}\t{x.end:.3f}\t{x.label}" for x in labels)]
        tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except (OSError, RuntimeError) as exc:  # soundfile's write errors are RuntimeErrors
        raise SessionError(f"cannot write the case {out}: {getattr(exc, 'strerror', None) or exc}") from exc
    return wav, tsv, labels
