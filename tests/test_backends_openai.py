"""The OpenAI-compatible client against a real server on 127.0.0.1.

The server is llama-cpp-python's (``python -m llama_cpp.server``) serving the packaged
SmolLM2-135M GGUF. No HTTP mocks: the malformed-stream cases use a tiny raw TCP server
written here (a real socket speaking deliberately broken server-sent events), because no
real server can be made to send a broken stream on demand.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from backend_fixtures import free_port, llama_server  # noqa: F401 - a fixture

from duplex.config import LLMConfig
from duplex.errors import LLMError
from duplex.stages.openai_llm import OpenAILLM, probe_server

COUNT = [{"role": "user", "content": "Count from one to two hundred in words, separated by commas."}]
HELLO = [
    {"role": "system", "content": "You are Duplex, a friendly voice assistant."},
    {"role": "user", "content": "Hello! How are you?"},
]


def _cfg(url: str, **kw) -> LLMConfig:
    kw.setdefault("read_timeout_s", 60.0)  # a shared two-core machine can be slow
    return LLMConfig(backend="openai", url=url, **kw)


def _long_prompt(salt: str, words: int = 150) -> list[dict[str, str]]:
    """~500 tokens, different for each ``salt``: the server's prefix cache must not help."""
    text = " ".join(f"{salt}{i % 97}" for i in range(words))
    return [{"role": "user", "content": f"{salt}: summarise this list: {text}"}]


def test_a_reply_streams_in_pieces_from_the_server(llama_server):  # noqa: F811
    llm = OpenAILLM(_cfg(llama_server.url, max_tokens=16))
    pieces = list(llm.stream(HELLO, threading.Event()))
    assert len(pieces) >= 4 and "".join(pieces).strip()
    assert llm.attempts == 1
    assert llm._model == str(llama_server.model_path)  # discovered through GET /models


@pytest.mark.slow
def test_greedy_replies_over_http_equal_the_in_process_model(llama_server):  # noqa: F811
    """Same GGUF, same sampling parameters: the HTTP backend adds transport, not changes."""
    from duplex.stages.llm import LlamaCppLLM

    kw = dict(max_tokens=20, temperature=0.0, seed=1234, repeat_penalty=1.3)
    http = "".join(OpenAILLM(_cfg(llama_server.url, **kw)).stream(HELLO, threading.Event()))
    local = LlamaCppLLM(LLMConfig(threads=1, **kw))
    inproc = "".join(local.stream(HELLO, threading.Event()))
    assert http == inproc


@pytest.mark.slow
def test_cancel_mid_reply_closes_the_connection_and_the_server_stops(llama_server):  # noqa: F811
    llm = OpenAILLM(_cfg(llama_server.url, max_tokens=400))
    mark = len(llama_server.log_text())
    cancel = threading.Event()
    got = []
    for piece in llm.stream(COUNT, cancel):
        got.append(piece)
        if len(got) == 3:
            cancel.set()
    assert len(got) == 3 and llm.tokens_generated == 3
    # The server notices at its next token and stops generating.
    assert llama_server.wait_for_log("Disconnected from client", timeout=60, after=mark), llama_server.log_text()[mark:]
    assert "llama_perf_context_print" not in llama_server.log_text()[mark:], "the server generated to the end"
    # ... and is free at once for the next request.
    t0 = time.monotonic()
    assert list(OpenAILLM(_cfg(llama_server.url, max_tokens=2)).stream(HELLO, threading.Event()))
    assert time.monotonic() - t0 < 30


@pytest.mark.slow
def test_cancel_while_waiting_for_the_first_token_returns_at_once(llama_server):  # noqa: F811
    llm = OpenAILLM(_cfg(llama_server.url, max_tokens=4))
    mark = len(llama_server.log_text())
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    t0 = time.monotonic()
    assert list(llm.stream(_long_prompt("waiting"), cancel)) == []
    assert time.monotonic() - t0 < 0.5
    # llama-cpp-python checks for the client only once the prompt is processed.
    assert llama_server.wait_for_log("Disconnected from client", timeout=120, after=mark)


@pytest.mark.slow
def test_a_slow_first_token_times_out_with_one_line(llama_server):  # noqa: F811
    llm = OpenAILLM(_cfg(llama_server.url, read_timeout_s=0.05, retries=0, max_tokens=4))
    mark = len(llama_server.log_text())
    t0 = time.monotonic()
    with pytest.raises(LLMError) as err:
        list(llm.stream(_long_prompt("slow"), threading.Event()))
    assert time.monotonic() - t0 < 2
    assert "nothing received for 0.05 s" in str(err.value) and "\n" not in str(err.value)
    assert llm.tokens_generated == 0
    llama_server.wait_for_log("Disconnected from client", timeout=120, after=mark)  # let it drain


def test_a_server_that_is_down_is_retried_then_named():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    llm = OpenAILLM(_cfg(url, retries=2, model="smollm2"))
    t0 = time.monotonic()
    with pytest.raises(LLMError) as err:
        list(llm.stream(HELLO, threading.Event()))
    took = time.monotonic() - t0
    assert llm.attempts == 3
    assert 0.25 + 0.5 <= took < 5  # the backoff between attempts, no more
    msg = str(err.value)
    assert url in msg and "after 3 attempts" in msg and "cannot connect" in msg


def test_cancel_during_the_retry_backoff_returns():
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAILLM(_cfg(url, retries=5, model="smollm2"))
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    t0 = time.monotonic()
    assert list(llm.stream(HELLO, cancel)) == []
    assert time.monotonic() - t0 < 0.5


def test_probe_reports_what_the_server_serves(llama_server):  # noqa: F811
    ok, detail = probe_server(_cfg(llama_server.url))
    assert ok and llama_server.model_path.name in detail
    ok, detail = probe_server(_cfg(f"http://127.0.0.1:{free_port()}/v1", connect_timeout_s=1.0))
    assert not ok and "cannot connect" in detail


def test_an_empty_or_odd_url_is_refused_before_any_request():
    with pytest.raises(LLMError, match="llm.url is empty"):
        OpenAILLM(LLMConfig(backend="openai"))
    with pytest.raises(LLMError, match="http"):
        OpenAILLM(LLMConfig(backend="openai", url="ftp://example.invalid/v1"))


# --- malformed streams, from a raw TCP server --------------------------------------------


class RawSSEServer:
    """A real TCP server on 127.0.0.1 that answers every request with the same bytes.

    Not an HTTP library and not a mock of one: it reads the request, writes ``body`` as a
    chunked ``text/event-stream`` response exactly as given (broken on purpose), and closes.
    """

    def __init__(self, events: list[bytes]) -> None:
        self.events = events
        self.connections = 0
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(5)
                req = b""
                while b"\r\n\r\n" not in req:
                    req += conn.recv(65536)
                head, _, body = req.partition(b"\r\n\r\n")
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for ev in self.events:
                        conn.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
                        time.sleep(0.01)
                    conn.sendall(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client hung up on a stream it found broken: expected

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def _chunk(text: str) -> bytes:
    return b'data: {"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % text.encode()


@pytest.fixture
def raw_server():
    servers: list[RawSSEServer] = []

    def make(events: list[bytes]) -> RawSSEServer:
        servers.append(RawSSEServer(events))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_malformed_json_after_the_first_token_raises_and_is_not_retried(raw_server):
    srv = raw_server([_chunk("Hello"), b"data: {not json\n\n", _chunk("never")])
    llm = OpenAILLM(_cfg(srv.url, model="m", retries=3))
    got = []
    with pytest.raises(LLMError, match="malformed stream") as err:
        for piece in llm.stream(HELLO, threading.Event()):
            got.append(piece)
    assert got == ["Hello"]
    assert srv.connections == 1, "a reply already being spoken is never restarted"
    assert "\n" not in str(err.value)


def test_a_chunk_without_choices_is_malformed(raw_server):
    srv = raw_server([b'data: {"id": "x", "object": "chat.completion.chunk"}\n\n'])
    with pytest.raises(LLMError, match="without choices"):
        list(OpenAILLM(_cfg(srv.url, model="m", retries=0)).stream(HELLO, threading.Event()))


def test_a_stream_that_stops_mid_reply_without_done_is_an_error(raw_server):
    srv = raw_server([_chunk("Hel"), _chunk("lo")])
    got = []
    with pytest.raises(LLMError, match="broke mid-reply"):
        for piece in OpenAILLM(_cfg(srv.url, model="m", retries=3)).stream(HELLO, threading.Event()):
            got.append(piece)
    assert got == ["Hel", "lo"] and srv.connections == 1


def test_an_empty_stream_is_retried_because_nothing_was_said_yet(raw_server):
    srv = raw_server([b": keep-alive\n\n"])
    llm = OpenAILLM(_cfg(srv.url, model="m", retries=1))
    with pytest.raises(LLMError, match="after 2 attempts"):
        list(llm.stream(HELLO, threading.Event()))
    assert srv.connections == 2


def test_comments_multiline_data_and_crlf_are_read_as_the_spec_says(raw_server):
    srv = raw_server([
        b": a comment\r\n\r\n",
        b'event: message\r\ndata: {"choices":[{"delta":{"content":"Hi"}}]}\r\n\r\n',
        b'data: {"choices":[{"delta":\ndata: {"content":" there"},"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ])
    llm = OpenAILLM(_cfg(srv.url, model="m"))
    assert list(llm.stream(HELLO, threading.Event())) == ["Hi", " there"]
    req = srv.requests[0]
    assert b'"stream": true' in req and b'"model": "m"' in req and b'"repeat_penalty": 1.3' in req


def test_the_api_key_comes_from_the_named_environment_variable(raw_server, monkeypatch):
    monkeypatch.setenv("DUPLEX_TEST_KEY", "sk-test-123")
    srv = raw_server([_chunk("ok"), b"data: [DONE]\n\n"])
    list(OpenAILLM(_cfg(srv.url, model="m", api_key_env="DUPLEX_TEST_KEY")).stream(HELLO, threading.Event()))
    assert b"Authorization: Bearer sk-test-123" in srv.requests[0]


def test_the_default_install_carries_the_openai_clients_dependencies():
    """`duplex run --llm-url` works after scripts/setup.sh: httpx and httpcore are plain
    dependencies in pyproject.toml (what `pip install -e .` installs), not behind an extra."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    plain = {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in project["dependencies"]}
    assert {"httpx", "httpcore"} <= plain, sorted(plain)
    import httpcore  # noqa: F401 - what the openai backend imports
