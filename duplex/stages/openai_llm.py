"""An OpenAI-compatible streaming chat client: vLLM, llama.cpp's server, or any compatible endpoint.

This is how duplex scales past one machine: the model runs behind ``llm.url`` and the
voice loop stays here. The client speaks ``POST {url}/chat/completions`` with
``stream: true`` and reads the server-sent events.

* **Timeouts.** ``llm.connect_timeout_s`` bounds the TCP (and TLS) connect,
  ``llm.read_timeout_s`` every read, the wait for the first token included.
* **Retries only before the first token.** A refused connection, a timeout, a 429 or 5xx
  before any text arrived is retried ``llm.retries`` times with a short backoff. Once a
  token has been yielded the reply is being spoken and cannot be restarted, so a failure
  then raises :class:`LLMError`.
* **Cancel aborts the HTTP stream.** Setting ``cancel`` shuts the connection's socket
  down at once, even while a read is blocked waiting for the server, so the server sees
  the client go away and stops generating (vLLM aborts the request; llama-cpp-python's
  server logs ``Disconnected from client`` at its next token).

It uses httpcore (the transport under httpx) directly because it lets us see each
connection's socket through a network backend; proxies are not used.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from duplex.config import LLMConfig
from duplex.errors import LLMError

log = logging.getLogger(__name__)

Message = dict[str, str]

BACKOFF_S = 0.25
"""First retry delay; doubles per attempt."""
CANCEL_POLL_S = 0.02
"""How often the abort watcher looks at the cancel event while a stream is open."""


class _Retryable(Exception):
    """A failure before the first token that another attempt may cure."""


def _import_httpcore() -> Any:
    try:
        import httpcore
    except ImportError as exc:
        raise LLMError("the openai backend needs httpcore (pip install httpx)") from exc
    return httpcore


class _TrackedStream:
    """A network stream that registers itself while open, so it can be aborted from another thread."""

    def __init__(self, inner: Any, registry: _Registry) -> None:
        self._inner = inner
        self._registry = registry
        registry.add(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._registry.discard(self)
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None) -> _TrackedStream:
        self._registry.discard(self)  # the TLS stream owns the socket from here
        return _TrackedStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._registry)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def shutdown(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if sock is None:
            return
        try:
            # shutdown (not close) wakes a recv blocked in another thread and sends FIN.
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[_TrackedStream] = set()

    def add(self, s: _TrackedStream) -> None:
        with self._lock:
            self._open.add(s)

    def discard(self, s: _TrackedStream) -> None:
        with self._lock:
            self._open.discard(s)

    def abort_all(self) -> int:
        with self._lock:
            streams = list(self._open)
        for s in streams:
            s.shutdown()
        return len(streams)


def _backend(registry: _Registry) -> Any:
    httpcore = _import_httpcore()

    class TrackingBackend(httpcore.NetworkBackend):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self._inner = httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Any = None) -> Any:
            return _TrackedStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options), registry)

        def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
            return _TrackedStream(self._inner.connect_unix_socket(path, timeout, socket_options), registry)

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return TrackingBackend()


class _AbortOnCancel:
    """While open, shuts every connection of the client down as soon as ``cancel`` is set."""

    def __init__(self, cancel: threading.Event, registry: _Registry) -> None:
        self._cancel = cancel
        self._registry = registry
        self._done = threading.Event()
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="llm-http-abort", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            if self._cancel.wait(CANCEL_POLL_S):
                self.fired = True
                n = self._registry.abort_all()
                log.debug("cancel: aborted %d connection(s)", n)
                return

    def close(self) -> None:
        self._done.set()
        self._thread.join()


def _looks_like_local_model(ref: str) -> bool:
    return not ref or ref.startswith("package:") or ref.endswith(".gguf") or ref.startswith(("/", "./", "~"))


class OpenAILLM:
    """Streaming chat completions from an OpenAI-compatible server at ``llm.url``.

    ``llm.model`` names the served model; empty (or a local file reference, as in the
    default profile) means "whatever the server serves", read once from ``GET /models``.
    The API key, if any, comes from the environment variable named by ``llm.api_key_env``.
    """

    name = "openai"

    def __init__(self, cfg: LLMConfig) -> None:
        httpcore = _import_httpcore()
        if not cfg.url:
            raise LLMError("llm.url is empty: give the server's base URL, e.g. --llm-url http://127.0.0.1:8000/v1")
        parts = urlsplit(cfg.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LLMError(f"llm.url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {cfg.url!r}")
        self.cfg = cfg
        self.url = cfg.url.rstrip("/")
        self._registry = _Registry()
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl.create_default_context() if parts.scheme == "https" else None,
            max_connections=4,
            network_backend=_backend(self._registry),
        )
        self._headers = [(b"Content-Type", b"application/json"), (b"Accept", b"text/event-stream")]
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if key:
            self._headers.append((b"Authorization", f"Bearer {key}".encode()))
        self._model: str | None = None if _looks_like_local_model(cfg.model) else cfg.model
        self._timeouts = {
            "connect": cfg.connect_timeout_s,
            "read": cfg.read_timeout_s,
            "write": cfg.read_timeout_s,
            "pool": cfg.connect_timeout_s,
        }
        self.tokens_generated = 0
        """Content chunks received over the client's life."""
        self.attempts = 0
        """HTTP requests started for completions (retries included)."""

    # --- the LLM interface ----------------------------------------------------------------

    def warmup(self) -> None:
        """Resolve the model name and open a connection: the first turn pays for neither."""
        for _ in self.stream([{"role": "user", "content": "Hi"}], threading.Event(), max_tokens=1):
            pass

    def stream(
        self, messages: Sequence[Message], cancel: threading.Event, max_tokens: int | None = None
    ) -> Iterator[str]:
        """Yield reply pieces as the server sends them; return quietly once ``cancel`` is set.

        Raises:
            LLMError: the server is unreachable, too slow, refuses the request, or its
                stream breaks (after the retries, which only happen before the first token).
        """
        httpcore = _import_httpcore()
        transport_errors = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError)
        attempt = 0
        while True:
            started = False
            abort = _AbortOnCancel(cancel, self._registry)
            try:
                if cancel.is_set():
                    return
                body = json.dumps(self._body(messages, max_tokens or self.cfg.max_tokens)).encode()
                self.attempts += 1
                with self._pool.stream(
                    "POST", f"{self.url}/chat/completions", headers=self._headers, content=body,
                    extensions={"timeout": self._timeouts},
                ) as resp:
                    self._check_status(resp)
                    for piece in self._pieces(resp):
                        if cancel.is_set():
                            return
                        started = True
                        self.tokens_generated += 1
                        yield piece
                return
            except (_Retryable, *transport_errors) as exc:
                if cancel.is_set():
                    return  # our own abort, or a failure nobody is waiting for any more
                why = self._describe(exc)
                if started:
                    raise LLMError(f"the stream from {self.url} broke mid-reply: {why}") from exc
                if attempt >= self.cfg.retries:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    raise LLMError(f"no reply from {self.url}{tries}: {why}") from exc
                delay = BACKOFF_S * 2**attempt
                attempt += 1
                log.warning("LLM server %s: %s; retrying in %.2f s (%d/%d)", self.url, why, delay, attempt, self.cfg.retries)
                if cancel.wait(delay):
                    return
            finally:
                abort.close()

    def close(self) -> None:
        self._pool.close()

    # --- protocol details -------------------------------------------------------------------

    def _body(self, messages: Sequence[Message], max_tokens: int) -> dict[str, Any]:
        c = self.cfg
        body: dict[str, Any] = {
            "model": self._model_name(),
            "messages": list(messages),
            "stream": True,
            "max_tokens": max_tokens,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "seed": c.seed,
        }
        if c.repeat_penalty != 1.0:
            # Not in OpenAI's API: llama.cpp reads repeat_penalty, vLLM repetition_penalty.
            # A strict endpoint (api.openai.com) wants llm.repeat_penalty = 1.0.
            body["repeat_penalty"] = c.repeat_penalty
            body["repetition_penalty"] = c.repeat_penalty
        return body

    def _model_name(self) -> str:
        if self._model is None:
            ids = self._served_models()
            if not ids:
                raise _Retryable(f"{self.url}/models lists no model; set llm.model")
            self._model = ids[0]
            log.info("LLM server %s serves %s", self.url, ", ".join(ids))
        return self._model

    def _served_models(self) -> list[str]:
        resp = self._pool.request(
            "GET", f"{self.url}/models", headers=self._headers, extensions={"timeout": self._timeouts}
        )
        if resp.status >= 400:
            raise _Retryable(f"GET /models answered HTTP {resp.status}")
        try:
            return [m["id"] for m in json.loads(resp.content)["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise LLMError(f"{self.url}/models did not answer an OpenAI model list: {exc}") from exc

    def _check_status(self, resp: Any) -> None:
        if resp.status < 400:
            return
        detail = _error_text(resp.read())
        if resp.status == 429 or resp.status >= 500:
            raise _Retryable(f"HTTP {resp.status} {detail}".strip())
        hint = " (check llm.api_key_env)" if resp.status in (401, 403) else ""
        hint = hint or (" (check llm.model against GET /models)" if resp.status == 404 else "")
        raise LLMError(f"{self.url} refused the request: HTTP {resp.status} {detail}{hint}".strip())

    def _pieces(self, resp: Any) -> Iterator[str]:
        """Text pieces of a server-sent-event stream of chat.completion.chunk objects."""
        finished = False
        for data in _sse_data(resp.iter_stream()):
            if data == "[DONE]":
                return
            try:
                obj = json.loads(data)
            except ValueError as exc:
                raise LLMError(f"malformed stream from {self.url}: not JSON: {data[:80]!r}") from exc
            if not isinstance(obj, dict):
                raise LLMError(f"malformed stream from {self.url}: expected an object, got {data[:80]!r}")
            if "error" in obj:
                raise LLMError(f"{self.url} reported an error mid-stream: {_error_text(data.encode())}")
            try:
                choice = obj["choices"][0] if obj["choices"] else {}
            except (KeyError, TypeError) as exc:
                raise LLMError(f"malformed stream from {self.url}: a chunk without choices: {data[:80]!r}") from exc
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                yield piece
            finished = finished or bool(choice.get("finish_reason"))
        if not finished:
            raise _Retryable("the stream ended without [DONE]")

    def _describe(self, exc: BaseException) -> str:
        httpcore = _import_httpcore()
        if isinstance(exc, httpcore.ConnectTimeout):
            return f"connect timed out after {self.cfg.connect_timeout_s:g} s"
        if isinstance(exc, httpcore.ReadTimeout):
            return f"nothing received for {self.cfg.read_timeout_s:g} s (llm.read_timeout_s)"
        if isinstance(exc, httpcore.ConnectError):
            return f"cannot connect ({exc or 'refused'}); is the server running?"
        return str(exc) or type(exc).__name__


def _sse_data(chunks: Iterator[bytes]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined by newlines)."""
    buf = b""
    data: list[str] = []
    for chunk in chunks:
        buf += chunk
        *lines, buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            if line.startswith(":"):
                continue  # a comment: servers use them as keep-alives
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)
            # event/id/retry and unknown fields carry nothing for us (the SSE spec ignores them)
    if data:
        yield "\n".join(data)


def _error_text(raw: bytes) -> str:
    try:
        obj = json.loads(raw)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:200]
    except ValueError:
        return raw.decode("utf-8", errors="replace").strip()[:200]


def probe_server(cfg: LLMConfig) -> tuple[bool, str]:
    """Whether ``llm.url`` answers ``GET /models`` (for ``duplex models``), and what it serves."""
    if not cfg.url:
        return False, "set llm.url (or --llm-url)"
    try:
        httpcore = _import_httpcore()
    except LLMError as exc:
        return False, str(exc)
    try:
        client = OpenAILLM(cfg)
        try:
            ids = client._served_models()
        finally:
            client.close()
    except (LLMError, _Retryable) as exc:
        return False, str(exc)
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        return False, f"not reachable: {client._describe(exc)}"
    wanted = None if _looks_like_local_model(cfg.model) else cfg.model
    if wanted and wanted not in ids:
        return False, f"serves {', '.join(ids) or 'nothing'}, not {wanted}"
    return True, f"serves {', '.join(ids)}"
