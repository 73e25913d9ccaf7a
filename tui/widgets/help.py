"""The ``?`` screen: keys, and how to read the panes."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

LEGEND = [
    ("you  hello th▌", "italic: the recogniser's partial hypothesis, growing live; upright once final"),
    ("agent the moon▌", "the agent's words as the speaker plays them (not as the LLM writes them)"),
    ("agent … ~~never heard~~ ✂", "a barge-in: struck-through words were generated but never played"),
    ("‹you: okay›", "a backchannel, inline where it happened (yours in the agent's line, and its mm-hmm in yours)"),
    ("⚡ barge-in / (ignored)", "what the policy decided about speech over the agent"),
    ("LISTENING THINKING SPEAKING BOTH", "the agent's state; BOTH = you and the agent speak at once"),
    ("╌╌ red bars", "signals: the dashed line is the decision threshold, red columns are at or above it"),
    ("EoT ASR LLM TTS V2V barge", "timing per turn in ms: end-of-turn decision, ASR final, LLM first token,"
     " TTS first audio, voice-to-voice; barge = barge-in reaction time"),
]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 110; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 1 2; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold cyan")
        keys.add_column()
        for k, what in self.keys:
            keys.add_row(k, what)
        legend = Table.grid(padding=(0, 2))
        legend.add_column(style="bold", no_wrap=True)
        legend.add_column()
        for sym, what in LEGEND:
            legend.add_row(sym, what)
        with VerticalScroll():
            yield Static(Text("duplex — keys", "bold underline"))
            yield Static(keys)
            yield Static(Text("\nreading the panes", "bold underline"))
            yield Static(legend)
            yield Static(Text("\nescape or ? closes this", "dim"))
