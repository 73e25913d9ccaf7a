"""Conversation history: what the listener heard, rendered append-only for the KV cache."""

from __future__ import annotations

from duplex.history import INTERRUPTED_MARK, INTERRUPTED_NOTE, History


def test_an_interrupted_turn_keeps_only_the_heard_words_and_is_marked():
    h = History("Be brief.")
    h.add_user("tell me about the moon")
    h.add_agent("The moon is", interrupted=True)
    h.add_user("wait what about mars")
    msgs = h.messages()
    assert msgs[2] == {"role": "assistant", "content": "The moon is" + INTERRUPTED_MARK}
    assert msgs[3] == {"role": "system", "content": INTERRUPTED_NOTE}
    assert msgs[-1] == {"role": "user", "content": "wait what about mars"}


def test_each_reply_s_messages_are_a_prefix_of_the_next_one_s():
    h = History("Be brief.", max_turns=3)
    before = h.messages()
    broken = []
    for i in range(6):
        h.add_user(f"question {i}")
        if h.messages()[: len(before)] != before:
            broken.append(i)
        h.add_agent(f"answer {i}", interrupted=i % 2 == 0)
        before = h.messages()
    assert broken == [3, 5]  # only where old turns were dropped


def test_old_turns_go_in_blocks_of_half_the_window():
    h = History("Be brief.", max_turns=4)
    lengths = []
    for i in range(12):
        h.add_user(f"q{i}")
        h.add_agent(f"a{i}")
        lengths.append(len(h.turns))
    assert max(lengths) <= 2 * 4
    assert lengths == [2, 4, 6, 8, 4, 6, 8, 4, 6, 8, 4, 6]
    assert h.turns[0].role == "user" and h.turns[-1].text == "a11"


def test_consecutive_user_texts_merge_into_one_turn():
    h = History("Be brief.")
    h.add_user("so what")
    h.add_user("about mars")
    assert [t.text for t in h.turns] == ["so what about mars"]
