"""The text end-of-utterance model: incremental scoring gives the same bits, and live scoring never blocks."""

from __future__ import annotations

import time

import pytest

from duplex.errors import ModelError
from duplex.stages.eou import TextEndOfUtterance, common_prefix

TURN = [  # a turn's texts as a recogniser grows and rewrites them, then Whisper's final
    "mr john",
    "mr john dash",
    "mr john dashwood and then",
    "mr john dashwood and then at leisure to consider owl",
    "mr john dashwood and then at leisure to consider how much there might be",
    "and mr john dashwood had then leisure to consider how much there might be prudently in his power to do for them",
    "yes",
]


@pytest.fixture(scope="module")
def eou() -> TextEndOfUtterance:
    try:
        return TextEndOfUtterance()
    except ModelError as exc:  # pragma: no cover - set-up installs the model
        pytest.skip(str(exc))


def _from_scratch(m: TextEndOfUtterance, text: str) -> float:
    m._cached = None  # forget the tokens in the cache: the words are evaluated in one batch
    return m._score(text)


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2


def test_scoring_a_turn_incrementally_gives_the_bits_of_scoring_each_text_from_scratch(eou: TextEndOfUtterance) -> None:
    scratch = [_from_scratch(eou, t) for t in TURN]
    before = eou.evaluated_tokens
    incremental = [eou._score(t) for t in TURN]
    saved = eou.evaluated_tokens - before
    eou._cached = None
    full = sum(len(eou._llm.tokenize(t.encode(), add_bos=False, special=False)) for t in TURN)
    assert incremental == scratch, "the probability of a text must not depend on what was scored before it"
    assert saved < full, f"the shared words are not re-evaluated ({saved} tokens of {full})"
    # Backwards too: a shorter text after a longer one.
    assert [eou._score(t) for t in reversed(TURN)] == scratch[::-1]


def test_live_scoring_never_blocks_and_the_score_is_the_waited_ones(eou: TextEndOfUtterance) -> None:
    text = "could you book a table for two at eight"
    assert eou.peek(text) is None
    eou.submit(text)
    deadline = time.monotonic() + 30
    while eou.peek(text) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p = eou.peek(text)
    assert p is not None, "the background thread scored the submitted text"
    eou._memo.clear()
    assert eou(text) == p
    assert eou.peek("") == 0.0 and eou("") == 0.0
