from duplex.stages.chunker import TextChunker


def feed(chunker, text, step=3):
    out = []
    for i in range(0, len(text), step):
        out += chunker.push(text[i : i + step])
    return out + chunker.flush()


def test_first_chunk_is_a_clause_later_ones_sentences():
    c = TextChunker(first_min_words=2)
    chunks = feed(c, "Well, the moon is about 384,000 km away. It orbits the earth, slowly. Nice!")
    # The first clause needs two words: "Well," alone is too short, so it waits.
    assert chunks[0] == "Well, the moon is about 384,000 km away."
    c = TextChunker(first_min_words=2)
    chunks = feed(c, "The moon, our neighbour, is far. It orbits the earth, slowly. Nice!")
    assert chunks == ["The moon,", "our neighbour, is far.", "It orbits the earth, slowly.", "Nice!"]


def test_markdown_is_stripped_and_nothing_is_lost():
    c = TextChunker()
    text = "**Paris** is the capital. It is *lovely* in spring"
    chunks = feed(c, text, step=1)
    assert " ".join(chunks) == "Paris is the capital. It is lovely in spring"


def test_long_run_without_punctuation_is_cut_at_a_space():
    c = TextChunker(max_chars=40)
    chunks = feed(c, "word " * 30)
    assert all(len(ch) <= 40 for ch in chunks)
    assert sum(len(ch.split()) for ch in chunks) == 30
