"""Bad input gets one line naming the problem and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def duplex(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "duplex.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=120)


def assert_one_line_error(p: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_help_lists_every_command():
    p = duplex("--help")
    assert p.returncode == 0
    for cmd in ("run", "demo", "talk", "replay", "test-scenarios", "export-case", "bench", "eval-policy",
                "train-policy", "models", "broker", "mqtt"):
        assert cmd in p.stdout


def test_missing_input_wav(tmp_path):
    assert_one_line_error(duplex("run", "--input", str(tmp_path / "nope.wav")), "not found", "nope.wav")


def test_corrupt_input_wav(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    assert_one_line_error(duplex("run", "--input", str(bad)), "cannot read audio file", "bad.wav")


def test_unknown_config_key_and_wrong_type(tmp_path):
    wav = ROOT / "tests" / "data" / "goforward.wav"
    assert_one_line_error(duplex("run", "--input", str(wav), "--set", "llm.bogus=1"), "unknown key 'llm.bogus'")
    assert_one_line_error(duplex("run", "--input", str(wav), "--set", "vad.threshold=high"), "vad.threshold must be a number")
    cfg = tmp_path / "x.toml"
    cfg.write_text("[tts]\nspeed = [1, 2]\n")
    assert_one_line_error(duplex("run", "--input", str(wav), "--config", str(cfg)), "tts.speed", "x.toml")


@pytest.mark.parametrize("args", [["run", "--frobnicate"], ["nonsense"], ["run", "--policy", "magic"]])
def test_bad_flags(args):
    assert_one_line_error(duplex(*args), "error")


def test_bad_simulated_user_script(tmp_path):
    s = tmp_path / "s.toml"
    s.write_text('[[say]]\ntext = "hi"\n')
    assert_one_line_error(duplex("run", "--simulate", str(s), "--no-record"), "needs exactly one of")


# --- every subcommand is a real command --------------------------------------------------------

SUBCOMMANDS = ("run", "demo", "talk", "replay", "test-scenarios", "export-case", "bench", "eval-policy",
               "train-policy", "models", "broker", "mqtt", "mqtt tail", "enroll")
HELP_MENTIONS = {
    # A flag of each command's own, so forwarded or empty help fails.
    "run": "--simulate", "demo": "--no-record", "talk": "--simulate", "replay": "--compare",
    "test-scenarios": "--keep", "export-case": "OUT.tsv", "bench": "--mode", "eval-policy": "--per-source",
    "train-policy": "--steps", "models": "--config", "broker": "--port", "mqtt": "tail", "mqtt tail": "--device",
    "enroll": "--remove",
}


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_real_help(command, capsys):
    from duplex.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*command.split(), "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: duplex {command}"), out
    assert HELP_MENTIONS[command] in out, out


def test_help_lists_commands_from_one_table():
    from duplex.commands import COMMANDS

    assert sorted(COMMANDS) == sorted(c for c in SUBCOMMANDS if " " not in c)
    out = duplex("--help").stdout
    for name, info in COMMANDS.items():
        mod = info.load()
        assert callable(mod.add_arguments) and callable(mod.run) and mod.__doc__, name
        assert name in out


def test_policy_names_come_from_one_registry(capsys):
    import typing

    from duplex.cli import main
    from duplex.config import PolicyConfig
    from policies import BUILDERS, POLICY_NAMES

    # The config's Literal is what validation checks; the registry must build exactly those.
    assert set(typing.get_args(typing.get_type_hints(PolicyConfig)["name"])) == set(POLICY_NAMES) == set(BUILDERS)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "{" + ",".join(POLICY_NAMES) + "}" in out


@pytest.mark.parametrize("args, needle", [
    (["bench", "--policies", "rules,magic"], "--policies"),
    (["bench", "--scripts", "/nonexistent/script.toml"], "script.toml"),
    (["eval-policy", "/nonexistent/cases"], "/nonexistent/cases"),
    (["eval-policy", "--frobnicate", "x"], "frobnicate"),
    (["train-policy", "--steps", "many"], "--steps"),
    (["mqtt"], "mqtt tail"),
    (["replay", "/nonexistent/session"], "/nonexistent/session"),
])
def test_bad_input_to_every_kind_of_command_is_one_line(args, needle):
    assert_one_line_error(duplex(*args), needle)


def test_the_latency_benchmark_ships_with_the_package():
    import duplex
    from duplex.bench.latency import DEFAULT_SCRIPTS, check_scripts

    package = Path(duplex.__file__).resolve().parent
    assert DEFAULT_SCRIPTS and all(package in s.parents for s in DEFAULT_SCRIPTS)
    assert check_scripts(None) == list(DEFAULT_SCRIPTS)  # each one parses


def test_bench_counts_a_pause_as_the_moment_the_agent_went_silent() -> None:
    from duplex.bench.latency import silent_after_onset
    from duplex.events import AgentPaused, AgentResumed, AgentStopped

    events = [
        AgentPaused(1.0, turn=1, onset=0.8, reaction=0.2), AgentStopped(1.5, turn=1, latency=0.7),  # paused, then committed
        AgentPaused(3.0, turn=2, onset=2.8, reaction=0.2), AgentResumed(3.5, turn=2),  # a backchannel
        AgentStopped(5.0, turn=2, latency=0.4),  # a later barge-in without a pause
    ]
    assert silent_after_onset(events) == pytest.approx([0.232, 0.4])
