"""``duplex enroll``: store, list and remove voice profiles for speaker awareness.

``duplex enroll --input me.wav --name alice`` (or from the microphone, without
``--input``) keeps the embedding of the speech in the recording (plus a few statistics,
and the audio only with ``--keep-audio``) in the user's data directory; the engine's
speaker gate then lets only that voice barge in or end a turn. ``--list`` and
``--remove NAME`` manage the profiles.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import numpy as np

from duplex.audio import SAMPLE_RATE
from duplex.audio.source import MicSource
from duplex.audio.wav import read_audio
from duplex.commands.common import EXIT_OK
from duplex.errors import SpeakerError
from duplex.speaker_profiles import ProfileStore, check_name

NAME = "enroll"
HELP = "enrol a voice (WAV or microphone) so that only that user can barge in; --list, --remove NAME"
MIN_SPEECH_S = 2.0
"""Shortest enrolment accepted (EER measured for 2, 5 and 10 s in benchmarks/speaker.py)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", metavar="WAV", help="a recording of the user alone (any WAV/FLAC); "
                   "without it, record from the microphone")
    p.add_argument("--name", "-n", default="user", help="profile name (default: user)")
    p.add_argument("--seconds", type=float, default=15.0, help="microphone: how long to record (default 15)")
    p.add_argument("--keep-audio", action="store_true", help="also keep the enrolment audio beside the profile")
    p.add_argument("--force", "-f", action="store_true", help="replace an existing profile of that name")
    p.add_argument("--list", "-l", action="store_true", help="list enrolled voices")
    p.add_argument("--remove", metavar="NAME", help="delete a voice profile (and its audio)")
    p.add_argument("--dir", help="voices directory (default: $XDG_DATA_HOME/duplex/voices)")


def run(args: argparse.Namespace, pyaudio_module: Any = None) -> int:
    store = ProfileStore(getattr(args, "dir", None))
    if args.list:
        names = store.names()
        if not names:
            print(f"no voices enrolled in {store.root} (duplex enroll --input WAV --name NAME)")
        for name in names:
            p = store.load(name)
            audio = ", audio kept" if p.audio_file else ""
            print(f"{p.name}: {p.speech_s:.1f} s of speech, {p.n_windows} windows, consistency "
                  f"{p.self_sim_mean:.2f} (min {p.self_sim_min:.2f}), {p.level_dbfs:.0f} dBFS, "
                  f"from {p.source or '?'}, {p.created}{audio}")
        return EXIT_OK
    if args.remove:
        for path in store.remove(args.remove):
            print(f"removed {path}")
        return EXIT_OK

    name = check_name(args.name)
    if store.exists(name) and not args.force:
        raise SpeakerError(f"a voice named '{name}' is already enrolled: use --force to replace it, "
                           f"or --remove {name}")
    if args.input:
        audio, source = read_audio(args.input), str(args.input)
    else:
        if not args.seconds > 0:
            raise SpeakerError(f"--seconds must be > 0, got {args.seconds}")
        print(f"duplex: recording {args.seconds:.0f} s from the microphone: talk normally, alone...",
              file=sys.stderr)
        audio, source = asyncio.run(_record(args.seconds, pyaudio_module)), "microphone"

    # Heavy imports only when there is audio to embed (--list stays instant).
    from duplex.stages.speaker import SpeakerEncoder, profile_from_recording

    profile, speech = profile_from_recording(SpeakerEncoder(), audio, name, source=source, min_speech_s=MIN_SPEECH_S)
    if profile.self_sim_mean < 0.75:
        print(f"duplex: warning: the windows of this recording disagree (consistency {profile.self_sim_mean:.2f}): "
              f"is someone else talking, or is it noisy?", file=sys.stderr)
    path = store.save(profile, audio=speech if args.keep_audio else None)
    short = " (10 s or more recognises better)" if profile.speech_s < 10 else ""
    print(f"enrolled '{name}': {profile.speech_s:.1f} s of speech{short} -> {path}")
    print(f"duplex run lets only this voice take the turn with [speaker] profile = \"{name}\" "
          f"(--set speaker.profile={name})")
    return EXIT_OK


async def _record(seconds: float, pyaudio_module: Any = None) -> np.ndarray:
    src = MicSource(pyaudio_module=pyaudio_module)
    need = int(seconds * SAMPLE_RATE)
    got: list[np.ndarray] = []
    n = 0
    async for frame in src.frames():
        got.append(frame)
        n += len(frame)
        if n >= need:
            break
    return np.concatenate(got).astype(np.float32) if got else np.zeros(0, np.float32)
