"""The state bar: what the agent is doing, and with what."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from duplex.events import AgentState
from tui.session import SessionInfo
from tui.view import state_label

STATE_STYLES = {
    AgentState.LISTENING: "bold black on #5fd787",
    AgentState.THINKING: "bold black on #ffd75f",
    AgentState.SPEAKING: "bold white on #8757d7",
    AgentState.OVERLAP: "bold white on #d75f5f",
    AgentState.PAUSED: "bold black on #ffaf5f",
    AgentState.MUTED: "bold white on #585858",
}


SPEAKER_LABELS = {"user": "user", "agent": "agent (echo)", "other_speaker": "someone else", "unknown": "?"}
"""The state bar's small "who is speaking" label, per speaker-gate label."""
SPEAKER_STYLES = {"user": "green", "agent": "dim", "other_speaker": "bold yellow", "unknown": "dim"}


class StateBar(Widget):
    """Two lines: the state badge, policy, recording, MQTT and microphone; then the models.

    Every field is a reactive: the app assigns, ``watch_state`` re-classes the bar (the
    CSS colours its edge) and announces the change with :class:`StateBar.StateShown`.
    """

    DEFAULT_CSS = """
    StateBar { height: 2; padding: 0 1; background: $panel; }
    """

    @dataclass
    class StateShown(Message):
        """The bar now shows ``label`` (LISTENING, THINKING, SPEAKING, BOTH, PAUSED, MUTED, ENDED)."""

        label: str

    state: reactive[AgentState] = reactive(AgentState.LISTENING)
    ended: reactive[str | None] = reactive(None)
    policy: reactive[str] = reactive("")
    recording: reactive[bool | None] = reactive(None)
    mqtt: reactive[str] = reactive("off")
    """off, connected, down, or unknown."""
    muted: reactive[bool] = reactive(False)
    speaker: reactive[str] = reactive("")
    """Who the speaker gate hears (``user``, ``agent``, ``other_speaker``, ``unknown``; empty: nobody, or off)."""
    ui_dropped: reactive[int] = reactive(0)

    def __init__(self, info: SessionInfo, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.info = info
        self.set_reactive(StateBar.policy, info.policy)
        self.set_reactive(StateBar.recording, info.recording)
        self.set_reactive(StateBar.mqtt, "unknown" if info.mqtt else "off")

    @property
    def label(self) -> str:
        return "ENDED" if self.ended is not None else state_label(self.state)

    def watch_state(self, old: AgentState, new: AgentState) -> None:
        self.remove_class(f"-{old.value}")
        self.add_class(f"-{new.value}")
        self.post_message(self.StateShown(self.label))

    def watch_ended(self, ended: str | None) -> None:
        self.set_class(ended is not None, "-ended")
        if ended is not None:
            self.post_message(self.StateShown(self.label))

    def render(self) -> Text:
        badge_style = "bold white on #303030" if self.ended is not None else STATE_STYLES[self.state]
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f" {self.label:^9} ", badge_style)
        t.append("  policy ", "dim")
        t.append(self.policy or "-", "bold")
        t.append("   rec ", "dim")
        if self.recording is None:
            t.append("off (not recorded)", "dim")
        elif self.recording:
            t.append("● on", "bold red")
        else:
            t.append("○ paused", "yellow")
        t.append("   mqtt ", "dim")
        t.append(self.mqtt, {"connected": "green", "down": "bold red", "off": "dim"}.get(self.mqtt, "yellow"))
        t.append("   mic ", "dim")
        t.append("muted" if self.muted else "on", "bold yellow" if self.muted else "green")
        if self.speaker:
            t.append("   voice ", "dim")
            t.append(SPEAKER_LABELS.get(self.speaker, self.speaker), SPEAKER_STYLES.get(self.speaker, "yellow"))
        if self.ui_dropped:
            t.append(f"   ui dropped {self.ui_dropped}", "yellow")
        i = self.info
        t.append("\n")
        t.append(f" {i.title}", "bold")
        t.append(f"  profile {i.profile} · ASR {i.asr} · LLM {i.llm} · TTS {i.tts}", "dim")
        if i.source:
            t.append(f" · input {i.source}", "dim")
        if i.session_dir is not None:
            t.append(f" · session {i.session_dir}", "dim")
        return t
