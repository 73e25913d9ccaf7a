"""One root for every error duplex raises on purpose.

Each stage has a subclass; messages are written for the person at the terminal and
name the thing to fix. Foreign exceptions are translated at the boundary with
``raise XError(...) from exc`` so the CLI can print one line and exit 2.
"""

from __future__ import annotations


class DuplexError(Exception):
    """Root of every error duplex raises deliberately."""


class ConfigError(DuplexError):
    """A configuration file or flag is invalid."""


class AudioError(DuplexError):
    """An audio file or device cannot be read or written."""


class ModelError(DuplexError):
    """A model's weights are missing or cannot be loaded."""


class VADError(ModelError):
    """The voice-activity detector failed."""


class ASRError(ModelError):
    """Speech recognition failed."""


class LLMError(ModelError):
    """The language model failed or its endpoint is unreachable."""


class TTSError(ModelError):
    """Speech synthesis failed."""


class PolicyError(DuplexError):
    """A turn-taking policy failed or its weights are invalid."""


class SessionError(DuplexError):
    """A recorded session is missing, corrupt or of an unknown version."""


class ScenarioError(DuplexError):
    """A scenario file is invalid."""


class MQTTError(DuplexError):
    """The MQTT connection or a command on it failed."""


class SpeakerError(DuplexError):
    """Speaker recognition failed: encoder weights, a voice profile, or enrolment audio."""
