"""The panes of the duplex terminal UI, one module each."""

from tui.widgets.conversation import ConversationPane, TurnLine, render_line
from tui.widgets.eventlog import EventLog
from tui.widgets.help import HelpScreen
from tui.widgets.signals import SignalsPane
from tui.widgets.statebar import StateBar
from tui.widgets.timing import TimingPane

__all__ = ["ConversationPane", "EventLog", "HelpScreen", "SignalsPane", "StateBar", "TimingPane", "TurnLine",
           "render_line"]
