"""Scenarios: a scripted user against the agent, with expected outcomes.

A scenario is a TOML file: a simulated-user script (:mod:`duplex.simuser`) plus what
the agent should do about each line. Example::

    name = "backchannel-mm-hmm"
    description = "A short mm-hmm while the agent talks: it keeps talking."
    agent_says = "The moon is about four hundred thousand kilometres away. Light takes a second to get here."

    [[say]]
    text = "mm-hmm"
    after_agent_speech = 1.0
    expect = "keeps_talking"

Line expectations (``expect``, a name or a list):

* ``keeps_talking``: the agent was speaking when the line began and did not stop for it;
* ``backchannel``: ... and the policy called it a backchannel;
* ``stops``: the agent stopped (a barge-in), within ``stop_within_ms`` of the line's start;
* ``waits``: no end of turn before the line was over (pauses included);
* ``responds``: an end of turn after the line, within ``respond_within_ms`` of its end;
* ``ignored``: no barge-in and no reply caused by the line (a cough in silence).

Scenario-wide: ``[expect]`` with exact counts ``barge_ins``, ``end_of_turns``,
``agent_turns``. ``agent_says`` makes the agent open with a fixed text (no LLM: fast
and independent of the model). ``echo_db``/``echo_delay_ms`` add the agent's own voice
to the microphone. ``[config]`` overrides ``policy``, ``engine`` or ``vad`` keys.
``[known_failure]`` maps a policy name to why the scenario fails with it (reported as
``xfail``, not a failure). See docs/sessions.md for the full reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from duplex.audio import FRAME_SAMPLES, SAMPLE_RATE
from duplex.clock import PerfTimer
from duplex.config import Config, _build, _merge, read_toml
from duplex.errors import ConfigError, ScenarioError
from duplex.events import (
    AgentState,
    AgentStopped,
    AgentTurnStarted,
    Backchannel,
    BargeIn,
    EndOfTurn,
    Event,
    OverlapIgnored,
    StateChanged,
)
from duplex.simuser import (
    GAIN_DB,
    SimulatedUser,
    Span,
    Utterance,
    UserVoice,
    check_sounds,
    check_voice,
    key_list,
    number,
    parse_utterance,
)

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
EXPECTATIONS = ("keeps_talking", "backchannel", "stops", "waits", "responds", "ignored")
COUNTS = ("barge_ins", "end_of_turns", "agent_turns")
CONFIG_SECTIONS = ("policy", "engine", "vad")
"""What a scenario may override: models are loaded once for a whole run of scenarios."""
SCENARIO_END = "scenario over"
ONSET_SLACK_S = 0.1
"""An onset up to this long before a line's first sample still belongs to it."""
DECISION_TAIL_S = 0.4
"""A decision about a line may come this long after its last sample (VAD hangover)."""
_LINE_KEYS = ("expect", "stop_within_ms", "respond_within_ms")
MAX_TAIL_S = 3600.0
"""The longest a scenario may go on after its last line, or wait for a trigger."""
MAX_ECHO_DELAY_MS = 2000.0
MAX_WITHIN_MS = 600_000.0
"""Bound on ``stop_within_ms`` / ``respond_within_ms`` (10 minutes)."""
_TOP_KEYS = frozenset({"name", "description", "voice", "agent_says", "tail_s", "echo_db", "echo_delay_ms",
                       "config", "known_failure", "expect", "say", "tags", "max_wait_s"})


@dataclass(frozen=True)
class Line:
    utterance: Utterance
    expects: tuple[str, ...] = ()
    stop_within_ms: float | None = None
    respond_within_ms: float | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    lines: tuple[Line, ...]
    description: str = ""
    voice: str = "piper"
    agent_says: str = ""
    tail_s: float = 1.5
    max_wait_s: float = 12.0
    echo_db: float | None = None
    echo_delay_ms: float = 60.0
    config: dict[str, Any] = field(default_factory=dict)
    known_failures: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    path: Path | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path(".")


# --- parsing --------------------------------------------------------------------------------


def parse_scenario(data: dict[str, Any], where: str = "scenario", path: Path | None = None) -> Scenario:
    """Validate a scenario (already parsed from TOML).

    Raises:
        ScenarioError: naming the file, the line and the key at fault.
    """
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {key_list(unknown)}")
    name = data.get("name", path.stem if path else "scenario")
    for key in ("name", "description", "voice", "agent_says"):
        if key in data and not isinstance(data[key], str):
            raise ScenarioError(f"{where}: {key} must be a string")
    check_voice(data.get("voice", "piper"), where)
    says = data.get("say")
    if not isinstance(says, list) or not says:
        raise ScenarioError(f"{where}: needs at least one [[say]] entry")
    lines = tuple(_parse_line(item, f"{where}: say #{k}") for k, item in enumerate(says, 1))
    counts = data.get("expect", {})
    if not isinstance(counts, dict):
        raise ScenarioError(f"{where}: [expect] must be a table of counts ({', '.join(COUNTS)})")
    for k, v in counts.items():
        if k not in COUNTS:
            raise ScenarioError(f"{where}: [expect] unknown count {k!r} (known: {', '.join(COUNTS)})")
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ScenarioError(f"{where}: [expect] {k} must be a whole number")
    known = data.get("known_failure", {})
    if not isinstance(known, dict) or not all(isinstance(v, str) and v for v in known.values()):
        raise ScenarioError(f"{where}: [known_failure] maps a policy name to a reason (a string)")
    cfg = data.get("config", {})
    if not isinstance(cfg, dict):
        raise ScenarioError(f"{where}: [config] must be a table")
    bad = set(cfg) - set(CONFIG_SECTIONS)
    if bad:
        raise ScenarioError(f"{where}: [config] may set only {', '.join(CONFIG_SECTIONS)} "
                            f"(models are shared by all scenarios), not {key_list(bad)}")
    if isinstance(cfg.get("vad"), dict) and "backend" in cfg["vad"]:
        raise ScenarioError(f"{where}: [config] cannot change vad.backend")
    try:  # types and ranges now, on the defaults; the profile's own values are checked at run
        _build(Config, _merge(Config().to_dict(), cfg))
    except ConfigError as exc:
        raise ScenarioError(f"{where}: [config]: {exc}") from None
    tags = data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ScenarioError(f"{where}: tags must be a list of strings")
    return Scenario(
        name=name,
        lines=lines,
        description=data.get("description", ""),
        voice=data.get("voice", "piper"),
        agent_says=data.get("agent_says", "").strip(),
        tail_s=_num(data, "tail_s", 1.5, where, lo=0.1, hi=MAX_TAIL_S),
        max_wait_s=_num(data, "max_wait_s", 12.0, where, lo=1.0, hi=MAX_TAIL_S),
        echo_db=_num(data, "echo_db", None, where, lo=GAIN_DB[0], hi=GAIN_DB[1]),
        echo_delay_ms=_num(data, "echo_delay_ms", 60.0, where, hi=MAX_ECHO_DELAY_MS),
        config=cfg,
        known_failures=dict(known),
        counts=dict(counts),
        tags=tuple(tags),
        path=path,
    )


def _num(data: dict[str, Any], key: str, default: Any, where: str, lo: float = 0.0, hi: float = MAX_WITHIN_MS) -> Any:
    return number(data[key], where, key, lo=lo, hi=hi) if key in data else default


def _parse_line(item: Any, where: str) -> Line:
    u = parse_utterance(item, where, extra_keys=_LINE_KEYS)
    exp = item.get("expect", [])
    exp = [exp] if isinstance(exp, str) else exp
    if not isinstance(exp, list) or not all(isinstance(e, str) for e in exp):
        raise ScenarioError(f"{where}: expect must be a name or a list of names ({', '.join(EXPECTATIONS)})")
    for e in exp:
        if e not in EXPECTATIONS:
            raise ScenarioError(f"{where}: unknown expectation {e!r} (known: {', '.join(EXPECTATIONS)})")
    stop = _num(item, "stop_within_ms", None, where)
    respond = _num(item, "respond_within_ms", None, where)
    if stop is not None and "stops" not in exp:
        raise ScenarioError(f"{where}: stop_within_ms goes with expect = \"stops\"")
    if respond is not None and "responds" not in exp:
        raise ScenarioError(f"{where}: respond_within_ms goes with expect = \"responds\"")
    return Line(u, tuple(exp), stop, respond)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file, its sound files included."""
    p = Path(path)
    scn = parse_scenario(read_toml(p, "scenario", ScenarioError), str(p), p)
    check_sounds((ln.utterance for ln in scn.lines), scn.base_dir, str(p))
    return scn


def find_scenarios(path: str | Path) -> list[Path]:
    """Scenario files under a directory (recursively, sorted), or the one file given."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ScenarioError(f"scenario directory not found: {p}")
    found = sorted(p.rglob("*.toml"))
    if not found:
        raise ScenarioError(f"no scenario files (*.toml) in {p}")
    return found


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One expectation and how it went; ``value_ms`` is the timing it measured, if any."""

    what: str
    passed: bool
    detail: str
    value_ms: float | None = None
    limit_ms: float | None = None


@dataclass
class ScenarioResult:
    scenario: Scenario
    policy: str
    checks: list[Check]
    session_s: float
    wall_s: float
    events: list[Event] = field(default_factory=list, repr=False)
    spans: list[Span] = field(default_factory=list)
    session_dir: Path | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def known_failure(self) -> str | None:
        return self.scenario.known_failures.get(self.policy)

    @property
    def status(self) -> str:
        """``pass``, ``fail``, ``xfail`` (a known failure) or ``xpass`` (a known failure that passed)."""
        if self.known_failure:
            return "xpass" if self.passed else "xfail"
        return "pass" if self.passed else "fail"

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        timings = ", ".join(f"{c.what.split(': ')[-1]} {c.value_ms:.0f} ms" for c in self.checks if c.value_ms is not None)
        return (f"{self.status.upper():5}  {self.scenario.name:<34} {timings}"
                f"{'  ' if timings else ''}({self.session_s:.1f} s session, {self.wall_s:.1f} s wall)")

    def explain(self) -> str:
        lines = [self.summary()]
        for c in self.checks:
            mark = "ok  " if c.passed else "FAIL"
            lines.append(f"         {mark} {c.what}: {c.detail}")
        if self.known_failure:
            lines.append(f"         known failure with {self.policy}: {self.known_failure}")
        return "\n".join(lines)

    def assert_passed(self) -> None:
        """Raise AssertionError with the full explanation unless every expectation held."""
        if not self.passed:
            raise AssertionError("scenario failed:\n" + self.explain())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.scenario.name,
            "path": str(self.scenario.path) if self.scenario.path else None,
            "policy": self.policy,
            "status": self.status,
            "known_failure": self.known_failure,
            "session_s": round(self.session_s, 3),
            "wall_s": round(self.wall_s, 3),
            "checks": [asdict(c) for c in self.checks],
            "lines": [{"line": s.index + 1, "start": s.start, "end": s.end, "what": s.label} for s in self.spans],
            "session_dir": str(self.session_dir) if self.session_dir else None,
        }


# --- checking ---------------------------------------------------------------------------------


def evaluate(scn: Scenario, spans: Sequence[Span], events: Sequence[Event], session_end: float) -> list[Check]:
    """Check a scenario's expectations against what happened."""
    checks: list[Check] = []
    by_index = {s.index: s for s in spans}
    states = [(e.t, e.state) for e in events if isinstance(e, StateChanged)]
    barges = [e for e in events if isinstance(e, BargeIn)]
    stops = {e.turn: e for e in events if isinstance(e, AgentStopped)}
    bcs = [e for e in events if isinstance(e, Backchannel) and e.who == "user"]
    eots = [e for e in events if isinstance(e, EndOfTurn)]
    starts = [e for e in events if isinstance(e, AgentTurnStarted)]

    talking = (AgentState.SPEAKING, AgentState.OVERLAP)

    def speaking_during(a: float, b: float) -> bool:
        """Was the agent audible at some moment in [a, b]?"""
        state = AgentState.LISTENING
        for ts, st in states:
            if ts > b + 1e-9:
                break
            if ts > a and st in talking:
                return True
            state = st
        return state in talking

    for k, line in enumerate(scn.lines):
        if not line.expects:
            continue
        label = f"line {k + 1} {line.utterance.label!r}"
        span = by_index.get(k)
        if span is None:
            trig = f"{line.utterance.trigger} = {line.utterance.value:g}"
            checks.append(Check(label, False, f"never started: its trigger ({trig}) never fired"))
            continue
        end = span.end if span.end is not None else session_end
        nxt = by_index.get(k + 1)
        horizon = nxt.start if nxt is not None else session_end
        lo, hi = span.start - ONSET_SLACK_S, end + DECISION_TAIL_S
        # A decision belongs to the line if its speech began with the line, or if it was
        # made while the line was heard (a run the echo had already opened, say).
        barge = next((b for b in barges if lo <= b.onset <= hi or span.start <= b.t <= hi), None)
        bc = next((b for b in bcs if lo <= b.onset <= hi or span.start <= b.t <= hi), None)
        # The state changes at the end of the frame the agent's audio starts in.
        was_speaking = speaking_during(span.start, span.start + 2 * FRAME_S)
        verdict = _verdict(barge, bc, span.start, events, lo, hi)
        for exp in line.expects:
            what = f"{label}: {exp}"
            match exp:
                case "keeps_talking" | "backchannel":
                    if not was_speaking:
                        checks.append(Check(what, False, f"the agent was not speaking when the line began ({span.start:.2f} s)"))
                    elif barge is not None:
                        checks.append(Check(what, False, f"barge-in {(barge.t - span.start) * 1000:.0f} ms after the line began"
                                                         f" (heard {barge.text!r})", (barge.t - span.start) * 1000))
                    elif exp == "backchannel" and bc is None:
                        checks.append(Check(what, False, "the agent kept talking but the policy did not call it a backchannel"))
                    else:
                        checks.append(Check(what, True, f"the agent kept talking ({verdict})"))
                case "stops":
                    limit = line.stop_within_ms
                    if barge is None:
                        spoke = speaking_during(span.start, end)
                        why = f"no barge-in ({verdict})" if spoke else "the agent did not speak during the line"
                        checks.append(Check(what, False, why, None, limit))
                        continue
                    st = stops.get(barge.turn)
                    stop_t = st.t if st is not None else barge.t
                    ms = (stop_t - span.start) * 1000
                    ok = limit is None or ms <= limit
                    bound = f" (limit {limit:.0f} ms)" if limit is not None else ""
                    checks.append(Check(what, ok, f"silent {ms:.0f} ms after the line began{bound}; "
                                                  f"decided on {barge.text!r}", ms, limit))
                case "waits":
                    early = next((e for e in eots if span.start < e.t < end - 1e-9), None)
                    if early is not None:
                        checks.append(Check(what, False, f"end of turn at {early.t:.2f} s, {(end - early.t) * 1000:.0f} ms "
                                                         f"before the user finished (heard {early.text!r})"))
                    else:
                        checks.append(Check(what, True, "no end of turn while the user was speaking"))
                case "responds":
                    limit = line.respond_within_ms
                    eot = next((e for e in eots if end - 0.05 <= e.t <= horizon and e.text), None)
                    if eot is None:
                        checks.append(Check(what, False, f"no end of turn (with words) in the {horizon - end:.1f} s "
                                                         "after the line", None, limit))
                        continue
                    ms = (eot.t - end) * 1000
                    replied = any(abs(s.t - eot.t) < 1e-6 for s in starts)
                    ok = replied and (limit is None or ms <= limit)
                    bound = f" (limit {limit:.0f} ms)" if limit is not None else ""
                    more = "" if replied else "; but no reply started"
                    checks.append(Check(what, ok, f"end of turn {ms:.0f} ms after the user finished{bound}{more}", ms, limit))
                case "ignored":
                    # A reply the user prompted starts at its end of turn (a `say` does not).
                    reply = next((s for s in starts if span.start <= s.t <= horizon
                                  and any(abs(e.t - s.t) < 1e-6 for e in eots)), None)
                    if barge is not None:
                        checks.append(Check(what, False, f"barge-in {(barge.t - span.start) * 1000:.0f} ms after the line began"))
                    elif reply is not None:
                        checks.append(Check(what, False, f"the agent replied to it at {reply.t:.2f} s (heard {reply.prompt!r})"))
                    else:
                        checks.append(Check(what, True, "no barge-in, no reply"))
    counts = {"barge_ins": len(barges), "end_of_turns": len(eots),
              "agent_turns": len(starts)}
    for key, want in scn.counts.items():
        got = counts[key]
        checks.append(Check(f"{key} = {want}", got == want, f"{got}"))
    return checks


def _verdict(barge: BargeIn | None, bc: Backchannel | None, start: float, events: Sequence[Event],
             lo: float, hi: float) -> str:
    """What the policy made of a line, in words."""
    if barge is not None:
        return f"barge-in after {(barge.t - start) * 1000:.0f} ms"
    if bc is not None:
        return f"called a backchannel after {(bc.t - start) * 1000:.0f} ms"
    ignored = next((e for e in events if isinstance(e, OverlapIgnored) and lo <= e.onset <= hi), None)
    if ignored is not None:
        return f"let pass as noise after {(ignored.t - start) * 1000:.0f} ms"
    return "no decision"


# --- running ----------------------------------------------------------------------------------


class _ScenarioSource:
    """The simulated user, then one silent frame on which the scenario ends (no drain:
    whatever the agent is saying then is cut, which no expectation depends on)."""

    live = False
    finite = True

    def __init__(self, user: SimulatedUser, name: str) -> None:
        self.user = user
        self.name = name
        self.engine: Any = None

    def attach(self, bus: Any) -> None:
        self.user.attach(bus)

    async def frames(self) -> AsyncIterator[np.ndarray]:
        async for f in self.user.frames():
            yield f
        if self.engine is not None:
            self.engine.end(SCENARIO_END)
        yield np.zeros(FRAME_SAMPLES, dtype=np.float32)


def scenario_config(cfg: Config, scn: Scenario, overrides: Iterable[dict[str, Any]] = ()) -> Config:
    """``cfg`` with the scenario's ``[config]`` and then ``overrides`` (the command line's) applied."""
    data = _merge(cfg.to_dict(), scn.config)
    for o in overrides:
        data = _merge(data, o)
    try:
        return _build(Config, data)
    except ConfigError as exc:
        raise ScenarioError(f"{scn.path or scn.name}: [config]: {exc}") from None


class ScenarioRunner:
    """Runs scenarios on one set of loaded models.

    Args:
        cfg: the base configuration (a profile).
        models: loaded for ``cfg`` (:func:`duplex.stages.factory.load_models`).
        overrides: config overrides applied after each scenario's own ``[config]``.
        keep_dir: record each scenario's session in ``keep_dir/NAME``.
    """

    def __init__(self, cfg: Config, models: Any, overrides: Sequence[dict[str, Any]] = (),
                 keep_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.models = models
        self.overrides = list(overrides)
        self.keep_dir = keep_dir

    def run(self, scn: Scenario, overrides: Sequence[dict[str, Any]] = ()) -> ScenarioResult:
        """Run one scenario (``overrides`` go after the runner's own)."""
        return asyncio.run(self.arun(scn, overrides))

    async def arun(self, scn: Scenario, overrides: Sequence[dict[str, Any]] = ()) -> ScenarioResult:
        from duplex.app import run_conversation
        from duplex.session.echo import EchoFilter
        from duplex.session.recorder import as_recorded

        cfg = scenario_config(self.cfg, scn, [*self.overrides, *overrides])
        t0 = PerfTimer.now()
        voice = UserVoice(scn.voice, self.models.tts)
        # Go on long enough after the last line that a late answer is measured, not cut off.
        waits = [ln.respond_within_ms / 1000 + 1.0 for ln in scn.lines if ln.respond_within_ms is not None]
        user = SimulatedUser([ln.utterance for ln in scn.lines], voice, base_dir=scn.base_dir,
                             tail_s=max([scn.tail_s, *waits]), max_wait_s=scn.max_wait_s)
        source = _ScenarioSource(user, f"scenario {scn.name}")

        def on_engine(engine: Any) -> None:
            source.engine = engine
            if scn.agent_says:
                engine.say(scn.agent_says)
            if scn.echo_db is not None:
                engine.add_mic_filter(EchoFilter(scn.echo_db, scn.echo_delay_ms))
            engine.add_mic_filter(as_recorded)  # last: the listener hears what mic.wav holds

        session_dir = None
        if self.keep_dir is not None:
            session_dir = Path(self.keep_dir) / _safe(scn.name)
            if session_dir.exists():
                import shutil

                shutil.rmtree(session_dir)
        result = await run_conversation(cfg, self.models, source, session_dir=session_dir, on_engine=on_engine)
        session_s = result.stats.frames * FRAME_SAMPLES / SAMPLE_RATE
        checks = evaluate(scn, user.spans, result.events, session_s)
        out = ScenarioResult(scn, cfg.policy.name, checks, session_s, PerfTimer.now() - t0,
                             result.events, list(user.spans), session_dir)
        if session_dir is not None:
            from duplex.session.store import annotate

            annotate(session_dir, scenario={k: v for k, v in out.to_dict().items() if k != "session_dir"})
        return out


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "scenario"
