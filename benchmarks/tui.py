"""TUI benchmark: does the terminal UI keep up with a fast transcript, without stalling the audio loop?

    .venv/bin/python benchmarks/tui.py [--seconds 10] [--rates 20,100,500]

A stand-in for the engine ticks every 32 ms on the app's own event loop (as the real
engine does) and publishes what a busy conversation publishes per frame: ``Levels``,
``PolicyFrame`` and ``AudioPlayed`` (a word every other chunk), plus ASR partials at a
given rate (20/s is the requirement; a partial grows by one word, a final every 30
words), a state change every 2 s and a latency row every 5 s. The app runs headless
(``App.run_test``, 130x42): Textual lays out and renders every update; only writing
the escape codes to a terminal is skipped (``tests/test_tui_smoke.py`` covers a real one).

Measured per run:

* **lag** — from an event's arrival in the app's inbox to the drain that shows it;
* **drain** — time spent applying a batch and updating the widgets;
* **tick late** — how late the 32 ms loop ticks fire: what the UI costs the audio loop
  (the ``no UI`` row is the same loop with nothing subscribed, the machine's floor);
* **behind** — partials published but not yet on screen when the stream stops, and
  whether the last partial is the text on screen one frame later;
* **cpu** — process CPU time over wall time.

``per-event`` redraws on every event instead of batching: what the batching saves.
Prints a table and writes ``benchmarks/results/tui.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.audio import FRAME_MS  # noqa: E402
from duplex.events import (  # noqa: E402
    AgentState,
    AgentTurnStarted,
    ASRFinal,
    ASRPartial,
    AudioPlayed,
    Event,
    Levels,
    PolicyFrame,
    StateChanged,
    TurnLatency,
    UserSpeechStarted,
)
from tui.app import REFRESH_HZ, DuplexApp  # noqa: E402
from tui.session import EventFeed, SessionInfo  # noqa: E402
from tui.view import percentile  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "tui.json"
FRAME_S = FRAME_MS / 1000
WORDS = ("so what I would really like to know is how far the moon is from the earth and whether "
         "we could ever build a tower tall enough to reach it if we had enough steel and time").split()
STATES = (AgentState.LISTENING, AgentState.THINKING, AgentState.SPEAKING, AgentState.OVERLAP)


@dataclass
class Stream:
    """The engine stand-in: ticks every frame and publishes that frame's events."""

    rate: float
    seconds: float
    publish: Any
    lateness: list[float] = field(default_factory=list)
    partials: int = 0
    events: int = 0
    last_partial: str = ""
    last_utterance: int = 0

    def _emit(self, ev: Event) -> None:
        self.events += 1
        self.publish(ev)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n_frames = int(self.seconds / FRAME_S)
        utt, words_in_utt, next_partial = 1, 0, 0.0
        self._emit(AgentTurnStarted(0.0, turn=1))
        self._emit(UserSpeechStarted(0.0))
        for i in range(n_frames):
            due = t0 + i * FRAME_S
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.lateness.append(max(0.0, loop.time() - due))
            t = i * FRAME_S
            self._emit(Levels(t, mic_db=-30.0 + 10 * ((i // 7) % 2), out_db=-20.0, vad=0.9 if (i // 20) % 2 else 0.1))
            self._emit(PolicyFrame(t, policy="predictor", probs=(("barge_in", (i % 50) / 50), ("end_of_turn", 0.2))))
            self._emit(AudioPlayed(t, turn=1, n_samples=512, text=WORDS[(i // 2) % len(WORDS)] if i % 2 else ""))
            if i % int(2 / FRAME_S) == 0:
                self._emit(StateChanged(t, state=STATES[(i // int(2 / FRAME_S)) % len(STATES)]))
            if i and i % int(5 / FRAME_S) == 0:
                self._emit(TurnLatency(t, turn=i, end_of_turn=0.64, asr_final=0.05, llm_first_token=0.3,
                                       tts_first_audio=0.2, voice_to_voice=1.1 + (i % 7) / 10))
            while next_partial <= t + FRAME_S:  # the partials due within this frame
                words_in_utt += 1
                text = " ".join(WORDS[k % len(WORDS)] for k in range(words_in_utt))
                self._emit(ASRPartial(t, text=text, utterance=utt))
                self.partials += 1
                self.last_partial, self.last_utterance = text, utt
                if words_in_utt == 30:
                    self._emit(ASRFinal(t, text=text, utterance=utt))
                    utt, words_in_utt = utt + 1, 0
                    self._emit(UserSpeechStarted(t))
                next_partial += 1 / self.rate


class PerEventApp(DuplexApp):
    """What not to do: redraw on every event."""

    def publish(self, ev: Event) -> None:
        super().publish(ev)
        self.flush_events()


def ms(xs: list[float], q: float) -> float:
    v = percentile(xs, q)
    return round((v or 0.0) * 1000, 2)


async def run_case(name: str, rate: float, seconds: float, ui: str) -> dict[str, Any]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if ui == "none":
        stream = Stream(rate, seconds, lambda ev: None)
        await stream.run()
        app = None
        shown_ok, behind = True, 0
    else:
        cls = PerEventApp if ui == "per-event" else DuplexApp
        app = cls(EventFeed([], SessionInfo(title="benchmark", policy="predictor")), clock=time.perf_counter,
                  autostart=False)
        async with app.run_test(size=(130, 42)) as pilot:
            await pilot.pause(0.5)  # let the first layout and render finish: not part of the stream
            wall0, cpu0 = time.perf_counter(), time.process_time()
            stream = Stream(rate, seconds, app.publish)
            await stream.run()
            behind = sum(isinstance(e, ASRPartial) for e in app.pending)  # published, not yet drained
            await asyncio.sleep(1 / app.refresh_hz + FRAME_S)  # one drain, one frame
            await pilot.pause()
            line = [w for w in app.conversation.lines if w.key.startswith(f"u{stream.last_utterance}.")]
            shown_ok = bool(line) and line[0].text.plain.startswith(f"you   {stream.last_partial}")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    st = app.stats if app is not None else None
    row = {
        "case": name,
        "ui": ui,
        "partials_per_s": rate,
        "seconds": seconds,
        "events_per_s": round(stream.events / seconds, 1),
        "partials": stream.partials,
        "drains_per_s": round(st.batches / seconds, 1) if st else 0.0,
        "events_per_drain": round(st.events / st.batches, 1) if st and st.batches else 0.0,
        "lag_p50_ms": ms(list(st.lags), 50) if st else 0.0,
        "lag_p95_ms": ms(list(st.lags), 95) if st else 0.0,
        "lag_max_ms": round(max(st.lags, default=0.0) * 1000, 2) if st else 0.0,
        "drain_p50_ms": ms(list(st.costs), 50) if st else 0.0,
        "drain_p95_ms": ms(list(st.costs), 95) if st else 0.0,
        "tick_late_p50_ms": ms(stream.lateness, 50),
        "tick_late_p95_ms": ms(stream.lateness, 95),
        "tick_late_max_ms": round(max(stream.lateness) * 1000, 2),
        "partials_behind_at_end": behind,
        "last_partial_on_screen": shown_ok,
        "ui_dropped": st.dropped if st else 0,
        "cpu_pct": round(100 * cpu / wall, 1),
    }
    row["keeps_up"] = bool(shown_ok and row["lag_p95_ms"] < 100 and row["ui_dropped"] == 0)
    return row


def print_table(r: dict[str, Any]) -> None:
    m = r["meta"]
    print(f"# TUI benchmark — {m['date']} — {m['machine']}, {m['cpus']} CPUs, load {m['load']}")
    print(f"# python {m['python']}, textual {m['textual']}, headless {m['size']}, drain {m['refresh_hz']:.0f} Hz, "
          f"{m['seconds']} s per run")
    print()
    head = (f"{'case':<22}{'part/s':>7}{'ev/s':>7}{'drain/s':>8}{'ev/drn':>7}{'lag p50':>8}{'p95':>7}{'max':>7}"
            f"{'drain p95':>10}{'tick late p50':>14}{'p95':>7}{'max':>7}{'behind':>7}{'cpu%':>6}  keeps up")
    print(head)
    print(f"{'':<22}{'':>7}{'':>7}{'':>8}{'':>7}{'ms':>8}{'ms':>7}{'ms':>7}{'ms':>10}{'ms':>14}{'ms':>7}{'ms':>7}")
    for x in r["runs"]:
        print(f"{x['case']:<22}{x['partials_per_s']:>7.0f}{x['events_per_s']:>7.0f}{x['drains_per_s']:>8.1f}"
              f"{x['events_per_drain']:>7.1f}{x['lag_p50_ms']:>8.1f}{x['lag_p95_ms']:>7.1f}{x['lag_max_ms']:>7.1f}"
              f"{x['drain_p95_ms']:>10.2f}{x['tick_late_p50_ms']:>14.2f}{x['tick_late_p95_ms']:>7.2f}"
              f"{x['tick_late_max_ms']:>7.1f}{x['partials_behind_at_end']:>7}{x['cpu_pct']:>6.0f}  "
              f"{('yes' if x['keeps_up'] else 'NO') if x['ui'] != 'none' else '-'}")


async def main_async(seconds: float, rates: list[float]) -> dict[str, Any]:
    runs = [await run_case("no UI (loop floor)", 20, seconds, "none")]
    for rate in rates:
        runs.append(await run_case(f"batched ({rate:.0f}/s)", rate, seconds, "batched"))
    runs.append(await run_case("per-event (20/s)", 20, seconds, "per-event"))
    return {
        "meta": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "python": platform.python_version(),
            "textual": metadata.version("textual"),
            "size": "130x42",
            "refresh_hz": REFRESH_HZ,
            "seconds": seconds,
            "frame_ms": FRAME_MS,
        },
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    p.add_argument("--rates", default="20,100,500", help="ASR partials per second, comma-separated")
    p.add_argument("--out", default=str(RESULTS), help="where to write the JSON")
    a = p.parse_args(argv)
    results = asyncio.run(main_async(a.seconds, [float(x) for x in a.rates.split(",")]))
    print_table(results)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    ok = all(x["keeps_up"] for x in results["runs"] if x["ui"] == "batched" and x["partials_per_s"] <= 20)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
