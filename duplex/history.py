"""Conversation history as the listener experienced it.

An interrupted reply is stored with only the words that were played before the
barge-in, flagged ``interrupted``; when rendered for the LLM it carries a short marker
(a trailing "..." and a system note right after it; a small model copies bracketed
markers into its reply, so none is used) so the next reply neither repeats itself nor
pretends it said the rest.

The rendering is append-only: a turn renders the same way for the rest of the
conversation, and old turns are dropped in blocks of half the window, not one by one.
So the messages of one reply are a prefix of the next reply's, and the LLM re-reads
only the new turn from its KV cache instead of the whole conversation.
"""

from __future__ import annotations

from dataclasses import dataclass

INTERRUPTED_MARK = "..."
INTERRUPTED_NOTE = (
    "The user interrupted your reply above; they heard only what is shown. "
    "Answer what they say next; do not repeat the cut-off reply."
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
        self._trim()

    def add_agent(self, heard: str, interrupted: bool = False) -> None:
        self.turns.append(Turn("assistant", heard.strip(), interrupted))
        self._trim()

    def _trim(self) -> None:
        """Past ``max_turns`` exchanges, keep the newest half: one cache miss per
        ``max_turns / 2`` exchanges instead of one every turn."""
        if len(self.turns) <= 2 * self.max_turns:
            return
        del self.turns[: len(self.turns) - max(1, self.max_turns)]
        while len(self.turns) > 1 and self.turns[0].role != "user":
            del self.turns[0]

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
        out = [{"role": "system", "content": system}]
        for turn in self.turns:
            content = turn.text + (INTERRUPTED_MARK if turn.interrupted else "")
            out.append({"role": turn.role, "content": content.strip() or "..."})
            if turn.interrupted:
                out.append({"role": "system", "content": INTERRUPTED_NOTE})
        return out
