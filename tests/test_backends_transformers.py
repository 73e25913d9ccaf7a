"""The transformers LLM backend on a tiny Llama (with a ChatML template) built locally."""

from __future__ import annotations

import threading
import time

import pytest
from backend_fixtures import tiny_llama  # noqa: F401 - a fixture

from duplex.config import LLMConfig
from duplex.errors import LLMError

HISTORY = [
    {"role": "system", "content": "you are duplex"},
    {"role": "user", "content": "hello how are you"},
]


def _cfg(path, **kw) -> LLMConfig:
    kw.setdefault("temperature", 0.0)
    return LLMConfig(backend="transformers", model=str(path), **kw)


@pytest.fixture(scope="module")
def llm(tiny_llama):  # noqa: F811
    from duplex.stages.transformers_llm import TransformersLLM

    return TransformersLLM(_cfg(tiny_llama, max_tokens=24))


def _generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llm-generate"]


def test_the_stream_is_the_chat_templated_greedy_generation_piece_by_piece(llm):
    import torch

    pieces = list(llm.stream(HISTORY, threading.Event()))
    assert len(pieces) > 5, "text arrives in many pieces, not one"
    tok, model = llm._tok, llm._model
    ids = tok.apply_chat_template(HISTORY, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tok.decode(ids["input_ids"][0]).startswith("<|im_start|> system")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False, repetition_penalty=1.3, pad_token_id=llm._pad_id)
    batch = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "".join(pieces).strip() == batch.strip()


def test_setting_cancel_stops_generation_within_a_token_and_joins_the_thread(llm):
    cancel = threading.Event()
    before = llm.tokens_generated
    got = []
    for piece in llm.stream(HISTORY, cancel, max_tokens=2000):
        got.append(piece)
        if len(got) == 3:
            cancel.set()
    produced = llm.tokens_generated - before
    assert len(got) == 3
    assert produced <= 6, f"generation went on after cancel: {produced} tokens"
    assert not _generate_threads()


def test_a_consumer_that_stops_reading_stops_generation_too(llm):
    before = llm.tokens_generated
    gen = llm.stream(HISTORY, threading.Event(), max_tokens=2000)
    next(gen)
    next(gen)
    gen.close()
    assert llm.tokens_generated - before <= 6
    assert not _generate_threads()


def test_cancel_set_before_the_first_token_yields_nothing(llm):
    cancel = threading.Event()
    cancel.set()
    assert list(llm.stream(HISTORY, cancel, max_tokens=2000)) == []
    assert not _generate_threads()


def test_history_is_trimmed_oldest_first_to_fit_the_context_but_the_system_prompt_stays(tiny_llama):  # noqa: F811
    from duplex.stages.transformers_llm import TransformersLLM

    # The smallest context a profile may set (256) and a history of ~30 turns of ~11 tokens.
    small = TransformersLLM(_cfg(tiny_llama, n_ctx=256, max_tokens=8))
    turns = 15
    history = [{"role": "system", "content": "you are duplex"}] + [
        {"role": r, "content": "tell me a story about the sea"} for r in ("user", "assistant") * turns
    ] + [{"role": "user", "content": "count one two three"}]
    ids = small._prompt(history, max_new=8)["input_ids"][0]
    text = small._tok.decode(ids)
    assert ids.shape[0] + 8 <= 256
    assert text.startswith("<|im_start|> system you are duplex")
    assert "count one two three" in text
    assert 0 < text.count("story") < 2 * turns


def test_sampling_is_seeded_so_the_same_history_gives_the_same_reply(tiny_llama):  # noqa: F811
    from duplex.stages.transformers_llm import TransformersLLM

    warm = TransformersLLM(_cfg(tiny_llama, temperature=0.9, max_tokens=12))
    a = "".join(warm.stream(HISTORY, threading.Event()))
    b = "".join(warm.stream(HISTORY, threading.Event()))
    assert a == b


def test_warmup_generates(llm):
    before = llm.tokens_generated
    t0 = time.monotonic()
    llm.warmup()
    assert llm.tokens_generated > before
    assert time.monotonic() - t0 < 30


def test_a_model_that_is_not_cached_names_itself_and_how_to_get_it():
    from duplex.stages.transformers_llm import TransformersLLM

    with pytest.raises(LLMError) as err:
        TransformersLLM(LLMConfig(backend="transformers", model="duplex-test/no-such-llm"))
    assert "duplex-test/no-such-llm" in str(err.value) and "huggingface-cli download" in str(err.value)


def test_the_packaged_gguf_is_not_a_transformers_model():
    from duplex.stages.transformers_llm import TransformersLLM

    with pytest.raises(LLMError, match="not a transformers model"):
        TransformersLLM(LLMConfig(backend="transformers"))


def test_a_model_without_a_chat_template_is_refused(tiny_llama, tmp_path):  # noqa: F811
    import json
    import shutil

    from duplex.stages.transformers_llm import TransformersLLM

    copy = tmp_path / "no-template"
    shutil.copytree(tiny_llama, copy)
    for f in copy.glob("*.jinja"):
        f.unlink()
    conf = json.loads((copy / "tokenizer_config.json").read_text())
    conf.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(conf))
    with pytest.raises(LLMError, match="no chat template"):
        TransformersLLM(_cfg(copy))


def test_cuda_on_a_cpu_only_torch_is_one_line(tiny_llama):  # noqa: F811
    import torch

    from duplex.stages.transformers_llm import TransformersLLM

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(LLMError, match='set llm.device = "cpu"'):
        TransformersLLM(_cfg(tiny_llama, device="cuda"))
