"""Conversation history as the listener experienced it.

An interrupted reply is stored with only the words that were played before the
barge-in, flagged ``interrupted``; when rendered for the LLM it carries a short marker
(a trailing "..." and a note in the system prompt; a small model copies bracketed
markers into its reply, so none is used) so the next reply neither repeats itself nor
pretends it said the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

INTERRUPTED_MARK = "..."
INTERRUPTED_NOTE = (
    "The user interrupted your last reply; they heard only what is shown. "
    "Answer what they said now; do not repeat the cut-off reply."
)


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    """``user`` or ``assistant``."""
    text: str
    interrupted: bool = False


class History:
    def __init__(self, system_prompt: str, max_turns: int = 6) -> None:
        self.system_prompt = system_prompt
        self.max_turns = max_turns
        self.turns: list[Turn] = []

    def add_user(self, text: str) -> None:
        text = text.strip()
        if self.turns and self.turns[-1].role == "user":
            prev = self.turns.pop()
            text = f"{prev.text} {text}".strip()
        self.turns.append(Turn("user", text))

    def add_agent(self, heard: str, interrupted: bool = False) -> None:
        self.turns.append(Turn("assistant", heard.strip(), interrupted))

    def preview(self, user_text: str, extra_system: str = "") -> list[dict[str, str]]:
        """The messages as they will be once ``user_text`` is added (history unchanged)."""
        saved = list(self.turns)
        self.add_user(user_text)
        try:
            return self.messages(extra_system)
        finally:
            self.turns = saved

    def messages(self, extra_system: str = "") -> list[dict[str, str]]:
        system = self.system_prompt + (" " + extra_system if extra_system else "")
        last_agent = next((t for t in reversed(self.turns) if t.role == "assistant"), None)
        if last_agent is not None and last_agent.interrupted:
            system += " " + INTERRUPTED_NOTE
        out = [{"role": "system", "content": system}]
        for turn in self.turns[-2 * self.max_turns :]:
            content = turn.text + (INTERRUPTED_MARK if turn.interrupted else "")
            out.append({"role": turn.role, "content": content.strip() or "..."})
        return out
