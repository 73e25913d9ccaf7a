"""The duplex predictor: streaming equals batch, shipped weights, decisions, deterministic training."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from duplex.config import PolicyConfig, PredictorConfig
from duplex.errors import PolicyError
from duplex.events import Decision
from duplex.turn import PolicyInput
from policies import make_policy
from policies.features import N_FEATURES, Featurizer
from policies.model import DuplexPredictor, ModelConfig, StreamingPredictor
from policies.predictor import DEFAULT_WEIGHTS, DecisionParams, PredictorPolicy

DATA = Path(__file__).parent / "data" / "policy"


def _random_model(cfg: ModelConfig, seed: int = 0) -> DuplexPredictor:
    torch.manual_seed(seed)
    m = DuplexPredictor(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # away from the tiny init, so differences show
        m.feat_mean.normal_()
        m.feat_std.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("n_layer,window,t", [(2, 8, 40), (3, 96, 150)])
def test_streaming_equals_full_sequence(n_layer: int, window: int, t: int) -> None:
    """Frame-by-frame numpy with a ring-buffer KV cache == one causal torch pass (past the window too)."""
    cfg = ModelConfig(n_layer=n_layer, window=window)
    m = _random_model(cfg)
    x = torch.randn(1, t, N_FEATURES)
    with torch.inference_mode():
        la, lu = m(x)
    s = StreamingPredictor(cfg, m.state_dict())
    out = [s.step(x[0, i].numpy()) for i in range(t)]
    np.testing.assert_allclose(np.stack([o[0] for o in out]), torch.softmax(la[0], -1).numpy(), atol=2e-5)
    np.testing.assert_allclose(np.stack([o[1] for o in out]), torch.softmax(lu[0], -1).numpy(), atol=2e-5)
    s.reset()
    again = s.step(x[0, 0].numpy())
    np.testing.assert_allclose(again[0], out[0][0], atol=1e-6)


def test_model_is_causal() -> None:
    cfg = ModelConfig(window=16)
    m = _random_model(cfg)
    x = torch.randn(1, 30, N_FEATURES)
    y = x.clone()
    y[0, 20:] += 5.0
    with torch.inference_mode():
        a1, _ = m(x)
        a2, _ = m(y)
    assert torch.allclose(a1[0, :20], a2[0, :20], atol=1e-6)
    assert not torch.allclose(a1[0, 20:], a2[0, 20:], atol=1e-3)


def test_shipped_weights_load_small_and_by_default() -> None:
    assert DEFAULT_WEIGHTS.exists(), "policies/weights/predictor.pt must be committed"
    size = DEFAULT_WEIGHTS.stat().st_size + DEFAULT_WEIGHTS.with_suffix(".json").stat().st_size
    assert size < 5 * 1024 * 1024
    pol = make_policy(PolicyConfig(name="predictor"))
    assert isinstance(pol, PredictorPolicy)
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert set(meta["thresholds"]) >= {"barge_in", "end_of_turn", "backchannel"}, "v1's thresholds stay for comparison"
    assert 0 < pol.params.pause_prob <= 1 and pol.params.eot_w_silence > 0


def test_missing_weights_raise_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="python -m policies.train"):
        PredictorPolicy(PredictorConfig(weights=str(tmp_path / "none.pt")))


def _cases() -> list[Path]:
    return sorted(DATA.glob("*.wav"))


def _run(wav: Path):
    from policies.eval import runner_for, score_case
    from policies.harness import load_case

    case = load_case(wav)
    trace = runner_for(wav, case).run(PredictorPolicy())
    return case, trace, score_case(case.events, trace)


@pytest.mark.slow
def test_policy_step_equals_batch_over_real_case_features() -> None:
    """The engine path (PolicyInput → features → numpy cache) equals a torch pass over the same frames."""
    from policies.eval import runner_for
    from policies.harness import load_case
    from policies.predictor import DecisionParams, load_weights

    wav = DATA / "barge_goforward_echo.wav"
    runner = runner_for(wav, load_case(wav))
    pol = PredictorPolicy()
    feats = Featurizer()
    xs, probs = [], []
    for x in runner.inputs():
        xs.append(feats(x))
        probs.append(pol.step(x).probs["barge_in"])
    _, meta = load_weights()
    m = DuplexPredictor(ModelConfig(**meta["model"]))
    m.load_state_dict(torch.load(DEFAULT_WEIGHTS, weights_only=True))
    with torch.inference_mode():
        la, _ = m.eval()(torch.from_numpy(np.stack(xs))[None])
    np.testing.assert_allclose(np.array(probs), torch.softmax(la[0], -1)[:, 2].numpy(), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["barge_goforward_echo", "stereo06_noecho"])
def test_real_person_barging_in_is_a_barge_in(name: str) -> None:
    """A real speaker talking over the agent (with and without echo) stops it, soon after onset."""
    _, _, s = _run(DATA / f"{name}.wav")
    assert s.confusion[0] == ("barge_in", "barge_in")
    assert s.barge_latency[0] < 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["turn_goforward_noecho", "turn_wizard_echo"])
def test_real_person_finishing_a_turn_gets_an_end_of_turn(name: str) -> None:
    case, trace, s = _run(DATA / f"{name}.wav")
    eot = [p for t, p in s.confusion if t == "end_of_turn"]
    assert eot == ["end_of_turn"]
    assert s.eot_delay[0] < 1.5
    assert s.spurious_barge_ins == 0


def _inp(**kw: object) -> PolicyInput:
    base = dict(t=1.0, mic=np.zeros(512, np.float32), playback=np.zeros(512, np.float32), vad=0.0,
                user_speaking=False, speech_run=0.0, silence=0.5, agent_speaking=False, agent_spoken=0.0,
                partial="", user_turn_open=True)
    base.update(kw)
    return PolicyInput(**base)  # type: ignore[arg-type]


def _v2(**kw: float) -> PredictorPolicy:
    params = DecisionParams(eot_bias=-3.0, eot_w_model=1.0, eot_w_text=0.0, eot_w_cont=-4.0, eot_w_silence=4.0,
                            min_silence_s=0.1, **kw)
    return PredictorPolicy(PredictorConfig(max_silence_ms=1000), params=params, text_eou=False)


def test_end_of_turn_needs_evidence_silence_or_the_safety_net() -> None:
    pol = _v2()
    hold, eot = np.array([0.9, 0.1, 0.0]), np.array([0.05, 0.95, 0.0])
    cont = np.array([0.9, 0.05, 0.05])
    assert pol.decide(_inp(silence=0.0), cont, eot).decision is Decision.HOLD
    assert pol.decide(_inp(silence=0.064), cont, eot).decision is Decision.HOLD, "under min_silence_s"
    assert pol.decide(_inp(silence=0.128), cont, eot).decision is Decision.HOLD, "one frame is not enough"
    assert pol.decide(_inp(silence=0.16), cont, eot).decision is Decision.END_OF_TURN
    pol.reset_decisions()
    for s in (0.2, 0.4, 0.6):
        assert pol.decide(_inp(silence=s), cont, hold).decision is Decision.HOLD, "the model says hold"
    pol.reset_decisions()
    # A trailing "and" asks for more: the same evidence waits.
    assert pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.5, partial="i want a table and"), cont, eot).decision is Decision.HOLD
    assert pol.decide(_inp(silence=0.16), cont, eot).decision is Decision.HOLD
    assert pol.decide(_inp(silence=0.2), cont, eot).decision is Decision.HOLD
    assert pol.decide(_inp(silence=1.0), cont, hold).decision is Decision.END_OF_TURN, "the safety net"
    assert pol.decide(_inp(user_turn_open=False), cont, eot).decision is None


def _speak(pol: PredictorPolicy, seconds: float, pa: np.ndarray, partial: str = "", paused: bool = False,
           **kw: object) -> list[Decision | None]:
    """Feed ``seconds`` of user speech under the agent; returns the decisions frame by frame."""
    hold = np.array([0.9, 0.1, 0.0])
    n = int(round(seconds / 0.032))
    return [pol.decide(_inp(agent_speaking=True, user_speaking=True, vad=0.9, silence=0.0, speech_run=(i + 1) * 0.032,
                            partial=partial, agent_paused=paused, **kw), pa, hold).decision for i in range(n)]


def _quiet(pol: PredictorPolicy, seconds: float, pa: np.ndarray, partial: str = "", paused: bool = False) -> list[Decision | None]:
    """Feed ``seconds`` of the agent talking alone; returns the decisions."""
    hold = np.array([0.9, 0.1, 0.0])
    n = int(round(seconds / 0.032))
    return [pol.decide(_inp(agent_speaking=True, silence=0.032 * (i + 1), partial=partial, agent_paused=paused), pa, hold).decision
            for i in range(n)]


def test_pause_then_commit_or_resume() -> None:
    pol = _v2(pause_prob=0.5, pause_run_s=0.2, commit_prob=0.97, commit_min_run_s=0.3, commit_run_s=1.0,
              bc_commit_run_s=1.6)
    unsure, sure, calm = np.array([0.3, 0.1, 0.6]), np.array([0.01, 0.01, 0.98]), np.array([0.8, 0.15, 0.05])
    hold = np.array([0.9, 0.1, 0.0])
    # An unsure sound pauses the agent once it has lasted 0.2 s; it ends short: resume (BACKCHANNEL).
    d = _speak(pol, 0.35, unsure)
    assert Decision.PAUSE in d and d.index(Decision.PAUSE) == 6 and Decision.BARGE_IN not in d
    assert [d for d in _quiet(pol, 0.35, unsure, paused=True) if d] == [Decision.BACKCHANNEL], "resumed once the sound is over"
    # A calm sound made only of backchannel words never pauses; only a very long one commits.
    pol.reset_decisions()
    assert set(_speak(pol, 0.6, calm, "yeah")) == {None}
    pol.reset_decisions()
    assert _speak(pol, 1.7, calm, "yeah yeah right").index(Decision.BARGE_IN) == 49
    # Commit on words, a stop word, a confident model, or a long sound; once per sound.
    for pa, partial, seconds in ((calm, "what about", 0.35), (calm, "wait", 0.45), (sure, "", 0.35), (calm, "", 1.05)):
        pol.reset_decisions()
        d = _speak(pol, seconds + 0.2, pa, partial)
        assert d.count(Decision.BARGE_IN) == 1, (partial, seconds)
        assert d.index(Decision.BARGE_IN) == pytest.approx(seconds / 0.032 - 1, abs=1.5), (partial, seconds)
    # A short "stop" that ends before any rule fires is still a barge-in.
    pol.reset_decisions()
    _speak(pol, 0.25, calm, "stop")
    assert [d for d in _quiet(pol, 0.35, calm, "stop", paused=True) if d] == [Decision.BARGE_IN]


def test_a_sure_backchannel_vetoes_the_recognisers_words() -> None:
    """pocketsphinx hears a murmured "mm-hmm" as "an eye on": the model's backchannel wins."""
    pol = _v2(pause_prob=0.5, pause_run_s=0.2, commit_min_run_s=0.3, commit_run_s=1.0, bc_veto_prob=0.8)
    murmur = np.array([0.05, 0.9, 0.05])
    d = _speak(pol, 0.7, murmur, "an eye on")
    assert set(d) == {None}, "no pause and no barge-in on words the model says are a backchannel"
    assert Decision.BARGE_IN in _speak(pol, 0.4, murmur, "an eye on the"), "but a long sound still commits"
    pol.reset_decisions()
    assert Decision.BARGE_IN in _speak(pol, 0.4, np.array([0.5, 0.4, 0.1]), "an eye on"), "unsure model: words count"


def test_the_agents_own_echo_is_not_the_user() -> None:
    """On an open speaker the VAD hears the agent; only frames above the echo count as the user's."""
    pol = _v2(pause_prob=0.5, pause_run_s=0.2, commit_run_s=1.0)
    rng = np.random.default_rng(0)
    play = (rng.standard_normal(512) * 0.1).astype(np.float32)  # -20 dBFS
    echo = play * 0.1  # -20 dB echo return
    calm, hold = np.array([0.8, 0.15, 0.05]), np.array([0.9, 0.1, 0.0])
    for _ in range(20):  # the agent alone: the echo return is learnt
        pol.decide(_inp(agent_speaking=True, mic=echo, playback=play, vad=0.1), calm, hold)
    d = [pol.decide(_inp(agent_speaking=True, user_speaking=True, silence=0.0, mic=echo, playback=play, vad=0.9,
                         speech_run=0.032 * (i + 1)), calm, hold).decision for i in range(60)]
    assert set(d) == {None}, "two seconds of echo that the VAD took for speech: no pause, no barge-in"
    voice = echo + (rng.standard_normal(512) * 0.1).astype(np.float32)
    d = [pol.decide(_inp(agent_speaking=True, user_speaking=True, silence=0.0, mic=voice, playback=play, vad=0.9,
                         speech_run=2.0), calm, hold).decision for _ in range(40)]
    assert Decision.BARGE_IN in d


def test_v1_decisions_reproduce_the_first_release() -> None:
    pol = PredictorPolicy(PredictorConfig(), text_eou=False)
    pol.params = DecisionParams.v1({"thresholds": {"barge_in": 0.6, "end_of_turn": 0.7, "backchannel": 0.5}})
    a = dict(agent_speaking=True, user_speaking=True, silence=0.0, speech_run=0.05)
    hold = np.array([0.9, 0.1, 0.0])
    assert pol.decide(_inp(**a), np.array([0.2, 0.1, 0.7]), hold).decision is Decision.BARGE_IN, "on its first frame"
    pol.reset_decisions()
    assert pol.decide(_inp(**a), np.array([0.5, 0.1, 0.4]), hold).decision is None, "v1 never pauses"
    pol.reset_decisions()
    eot, below = np.array([0.25, 0.75, 0.0]), np.array([0.35, 0.65, 0.0])
    assert pol.decide(_inp(silence=0.032), np.zeros(3), eot).decision is Decision.HOLD
    assert pol.decide(_inp(silence=0.064), np.zeros(3), eot).decision is Decision.END_OF_TURN
    assert pol.decide(_inp(silence=0.5), np.zeros(3), below).decision is Decision.HOLD


def _toy_data(seed: int) -> list:
    from policies.train import Conversation

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        x = rng.standard_normal((80, N_FEATURES)).astype(np.float32)
        at = (x[:, 0] > 0).astype(np.int64) * 2
        ut = (x[:, 1] > 0).astype(np.int64)
        at[:10] = -1
        out.append(Conversation(x, at, ut))
    return out


def test_training_is_deterministic_and_learns() -> None:
    from policies.train import TrainConfig, fit, full_loss

    data = _toy_data(0)
    mcfg = ModelConfig(n_embd=16, n_head=2, n_layer=1, window=8)
    cfg = replace(TrainConfig(), steps=40, batch=4, seq_len=32, warmup=5, threads=1, lr=1e-2)
    before = full_loss(DuplexPredictor(mcfg), data, cfg)
    m1, _ = fit(data, None, mcfg, cfg, progress=False)
    m2, _ = fit(data, None, mcfg, cfg, progress=False)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1), "same seed, same weights"
    m3, _ = fit(data, None, mcfg, replace(cfg, seed=cfg.seed + 1), progress=False)
    assert not all(torch.equal(s1[k], m3.state_dict()[k]) for k in s1)
    assert full_loss(m1, data, cfg) < before


def test_train_cli_writes_loadable_weights(tmp_path: Path) -> None:
    """``python -m policies.train`` on a tiny featurised cache: weights the policy loads."""
    from policies.train import main

    data = tmp_path / "cache" / "train"
    data.mkdir(parents=True)
    for i, c in enumerate(_toy_data(1)):
        np.savez(data / f"train_{i:04d}.npz", x=c.x, agent_target=c.agent_target, user_target=c.user_target)
    out = tmp_path / "w"
    assert main(["--data", str(tmp_path / "cache"), "--out", str(out), "--steps", "3", "--threads", "1"]) == 0
    assert "best_step" not in json.loads((out / "predictor.json").read_text())["train"]  # no dev set
    dev = tmp_path / "cache" / "dev"
    dev.mkdir()
    for i, c in enumerate(_toy_data(2)):
        np.savez(dev / f"dev_{i:04d}.npz", x=c.x, agent_target=c.agent_target, user_target=c.user_target)
    assert main(["--data", str(tmp_path / "cache"), "--out", str(out), "--steps", "4", "--threads", "1",
                 "--no-tune"]) == 0
    meta = json.loads((out / "predictor.json").read_text())["train"]
    assert 1 <= meta["best_step"] <= 4 and meta["dev_loss"] > 0  # early stopping kept the best dev loss
    pol = PredictorPolicy(PredictorConfig(weights=str(out / "predictor.pt")))
    res = pol.step(_inp())
    assert set(res.probs) >= {"barge_in", "backchannel", "end_of_turn", "hold"}
    assert abs(sum(res.probs[k] for k in ("continue", "backchannel", "barge_in")) - 1) < 1e-5


def test_comma_gaps_finds_the_comma_pauses_not_the_closures() -> None:
    from policies.data import SR, comma_gaps

    def tone(s: float) -> np.ndarray:
        return (0.3 * np.sin(2 * np.pi * 180 * np.arange(int(s * SR)) / SR)).astype(np.float32)

    def gap(s: float) -> np.ndarray:
        return np.zeros(int(s * SR), np.float32)

    # speech, a 40 ms closure, speech, a 300 ms comma pause, speech, a 250 ms one, speech
    x = np.concatenate([tone(0.4), gap(0.04), tone(0.3), gap(0.3), tone(0.5), gap(0.25), tone(0.3)])
    spans = comma_gaps(x, 2)
    assert spans is not None
    starts = [round(a / SR, 2) for a, _ in spans]
    lengths = [round((b - a) / SR, 2) for a, b in spans]
    assert starts == [0.74, 1.54] and lengths == [0.3, 0.25]
    assert comma_gaps(x, 3) is None  # the closure is no comma pause
    assert comma_gaps(np.concatenate([tone(0.4), gap(0.05), tone(0.4)]), 1) is None  # too short


def test_a_held_turn_is_rendered_whole_with_silent_holds(tmp_path: Path) -> None:
    """The generator's user turn with holds: one rendering, its comma gaps stretched."""
    from policies.data import Generator, Renderer, Voice

    gen = Generator(Renderer(tmp_path))
    calls: list[str] = []
    real = gen.render

    def spy(voice: Voice, text: str) -> np.ndarray:
        calls.append(text)
        return real(voice, text)

    gen.render = spy  # type: ignore[method-assign]
    rng = np.random.default_rng(1)
    for _ in range(20):  # until a turn with holds comes up
        calls.clear()
        audio, pauses = gen.user_turn(rng, Voice("piper"), held_out=False)
        if pauses:
            break
    assert pauses and len(calls) == 1, calls  # one rendering of the whole turn
    sr = 16000
    for start, end, _ in pauses:
        assert end - start >= 0.3
        assert not np.any(audio[int(start * sr) + 1 : int(end * sr) - 1])  # the hold is silent
        before = audio[max(0, int(start * sr) - 3200) : int(start * sr)]
        assert np.sqrt(np.mean(before**2)) > 0.01  # and speech leads into it


def test_whispers_draft_replaces_the_partials_words_until_the_user_goes_on() -> None:
    pol = _v2()
    cont, hold = np.array([0.9, 0.05, 0.05]), np.array([0.9, 0.1, 0.0])
    pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.5, partial="what is the man made"), cont, hold)
    assert pol.turn_text == "what is the man made"
    pol.decide(_inp(silence=0.1, partial="what is the man made", draft="What is the moon made of?"), cont, hold)
    assert pol.turn_text == "What is the moon made of?"
    pol.decide(_inp(silence=0.13, partial="what is the man made"), cont, hold)
    assert pol.turn_text == "What is the moon made of?", "the draft stays for the rest of the pause"
    # The user goes on within the same utterance: the draft no longer covers it.
    pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.9, partial="what is the man made of and"), cont, hold)
    assert pol.turn_text == "what is the man made of and"
    # A new speech run keeps the finished run's best words.
    pol.decide(_inp(silence=0.2, partial="what is the man made of and", draft="What is the moon made of, and"), cont, hold)
    pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.032, partial=""), cont, hold)
    pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.3, partial="why"), cont, hold)
    assert pol.turn_text == "What is the moon made of, and why"


class _CountingAudioModel:
    def __init__(self, p: float) -> None:
        self.p, self.calls, self.lengths = p, 0, []

    def __call__(self, audio: np.ndarray) -> float:
        self.calls += 1
        self.lengths.append(audio.size)
        return self.p


def test_smart_turns_audio_evidence_is_scored_once_per_pause_over_the_users_turn() -> None:
    from duplex.audio import FRAME_SAMPLES

    params = DecisionParams(eot_bias=0.0, eot_w_model=0.0, eot_w_text=0.0, eot_w_cont=0.0, eot_w_silence=0.0,
                            eot_threshold=1.5, min_silence_s=0.1, eot_w_audio=1.0, audio_trigger_s=0.1)
    pol = PredictorPolicy(PredictorConfig(max_silence_ms=5000), params=params, text_eou=False, audio_eou=False)
    fake = _CountingAudioModel(0.9)  # logit(0.9) = 2.2 >= 1.5: complete
    pol.audio.enabled, pol.audio._model = True, fake  # type: ignore[assignment]
    cont, hold = np.array([0.9, 0.05, 0.05]), np.array([0.9, 0.1, 0.0])
    rng = np.random.default_rng(0)
    mic = lambda: rng.standard_normal(FRAME_SAMPLES).astype(np.float32) * 0.1  # noqa: E731
    for k in range(30):  # ~1 s of the user's turn
        pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.032 * (k + 1), mic=mic()), cont, hold)
    out = [pol.decide(_inp(silence=0.032 * (k + 1), mic=mic()), cont, hold).decision for k in range(6)]
    assert fake.calls == 1, "one score per pause, not per frame"
    assert fake.lengths[0] == (30 + 4) * FRAME_SAMPLES, "the turn so far, its pause included"
    assert out[:2] == [Decision.HOLD, Decision.HOLD] and Decision.END_OF_TURN in out
    fake.p = 0.1  # incomplete: the same silence holds
    pol.reset_decisions()
    for k in range(30):
        pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.032 * (k + 1), mic=mic()), cont, hold)
    out = [pol.decide(_inp(silence=0.032 * (k + 1), mic=mic()), cont, hold).decision for k in range(6)]
    assert Decision.END_OF_TURN not in out


def test_a_mid_thought_pause_in_a_long_turn_gets_the_agents_mm_hmm_and_a_complete_one_does_not() -> None:
    params = DecisionParams(eot_bias=0.0, eot_w_model=1.0, eot_w_text=0.0, eot_w_cont=0.0, eot_w_silence=4.0,
                            eot_threshold=7.0, min_silence_s=0.1, bco_prob=2.0, bco_margin=10.0,
                            bco_silence_s=0.25, bco_min_speech_s=3.0)
    cont = np.array([0.9, 0.05, 0.05])
    going_on, finished = np.array([0.995, 0.004, 0.001]), np.array([0.3, 0.7, 0.0])

    def turn(pol: PredictorPolicy, speech_s: float, pu: np.ndarray, t0: float) -> list[Decision | None]:
        n = round(speech_s / 0.032)
        for k in range(n):
            pol.decide(_inp(t=t0 + k * 0.032, silence=0.0, user_speaking=True, speech_run=0.032 * (k + 1)), cont, pu)
        return [pol.decide(_inp(t=t0 + (n + k) * 0.032, silence=0.032 * (k + 1)), cont, pu).decision for k in range(12)]

    pol = PredictorPolicy(PredictorConfig(max_silence_ms=5000, agent_backchannel_min_gap_s=6.0), params=params,
                          text_eou=False)
    out = turn(pol, 4.0, going_on, 0.0)  # z = logit(0.004) + 4 * 0.25 = -4.5 <= 7 - 10
    assert out.count(Decision.BACKCHANNEL_OPPORTUNITY) == 1
    assert out.index(Decision.BACKCHANNEL_OPPORTUNITY) == 7, "at 0.25 s into the pause (the 8th silent frame)"
    assert turn(pol, 4.0, going_on, 5.0).count(Decision.BACKCHANNEL_OPPORTUNITY) == 0, "rate-limited"
    assert turn(pol, 4.0, going_on, 12.0).count(Decision.BACKCHANNEL_OPPORTUNITY) == 1, "after the gap"
    pol.reset_decisions()
    assert Decision.BACKCHANNEL_OPPORTUNITY not in turn(pol, 2.0, going_on, 0.0), "too early in the turn"
    pol.reset_decisions()
    assert Decision.BACKCHANNEL_OPPORTUNITY not in turn(pol, 4.0, finished, 0.0), "the user sounds finished"


class _SlowTextModel:
    """A text model whose scores arrive when the test says (as the background thread's would)."""

    def __init__(self, p: float) -> None:
        self.p, self.done, self.submitted, self.waited = p, set(), [], 0

    def __call__(self, text: str) -> float:
        self.waited += 1
        return self.p

    def peek(self, text: str) -> float | None:
        return self.p if text in self.done else None

    def submit(self, text: str) -> None:
        self.submitted.append(text)


def test_a_live_run_never_waits_for_the_text_model_and_ends_the_turn_once_its_score_is_in() -> None:
    params = DecisionParams(eot_bias=-3.0, eot_w_model=1.0, eot_w_text=1.0, eot_w_cont=0.0, eot_w_silence=4.0,
                            min_silence_s=0.1)
    pol = PredictorPolicy(PredictorConfig(max_silence_ms=1500), params=params, text_eou=False)
    fake = _SlowTextModel(0.9)
    pol.text._model = fake  # type: ignore[assignment]
    pol.wait_models = False
    cont, eot = np.array([0.9, 0.05, 0.05]), np.array([0.05, 0.95, 0.0])
    for k, partial in enumerate(["book", "book a", "book a table"]):
        pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.1 * (k + 1), partial=partial), cont, eot)
    assert fake.submitted == ["book", "book a", "book a table"], "every text of the turn is scored ahead, in order"
    out = [pol.decide(_inp(silence=0.032 * (k + 1), partial="book a table"), cont, eot).decision for k in range(12)]
    assert out == [Decision.HOLD] * 12, "no end of turn before the words' score is in"
    assert fake.waited == 0, "a live frame never waits for the model"
    fake.done.add("book a table")
    out = [pol.decide(_inp(silence=0.416 + 0.032 * k, partial="book a table"), cont, eot).decision for k in range(2)]
    assert out[-1] is Decision.END_OF_TURN
    # The same frames in a lockstep run: the score is waited for, the turn ends at once.
    pol.reset_decisions()
    pol.wait_models = True
    pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.3, partial="book a table"), cont, eot)
    out = [pol.decide(_inp(silence=0.032 * (k + 1), partial="book a table"), cont, eot).decision for k in range(12)]
    assert Decision.END_OF_TURN in out[:8] and fake.waited > 0


def test_the_safety_net_ends_a_live_turn_whose_score_never_comes() -> None:
    params = DecisionParams(eot_bias=-3.0, eot_w_model=1.0, eot_w_text=1.0, eot_w_silence=4.0, min_silence_s=0.1)
    pol = PredictorPolicy(PredictorConfig(max_silence_ms=500), params=params, text_eou=False)
    pol.text._model = _SlowTextModel(0.9)  # type: ignore[assignment]
    pol.wait_models = False
    cont, eot = np.array([0.9, 0.05, 0.05]), np.array([0.05, 0.95, 0.0])
    pol.decide(_inp(silence=0.0, user_speaking=True, speech_run=0.3, partial="book a table"), cont, eot)
    out = [pol.decide(_inp(silence=0.032 * (k + 1), partial="book a table"), cont, eot).decision for k in range(16)]
    assert out.index(Decision.END_OF_TURN) == 15, "at max_silence_ms, not before"
