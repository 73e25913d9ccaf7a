"""Any local instruct model through Hugging Face transformers, streamed and cancellable.

``generate`` runs in its own thread and hands text to a ``TextIteratorStreamer``; the
caller's generator reads the streamer. Cancellation is a ``StoppingCriteria`` that
``generate`` consults after every token: once ``cancel`` is set (or the caller stops
reading) generation ends after the token being computed, and the thread is joined before
``stream`` returns, so no work outlives the reply.

Loading is local-only: ``llm.model`` is a directory or a repo id already in the Hugging
Face cache (see :func:`duplex.resources.locate_hf_causal_lm`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from duplex.config import LLMConfig
from duplex.errors import LLMError, ModelError
from duplex.resources import force_offline, locate_hf_causal_lm

log = logging.getLogger(__name__)

Message = dict[str, str]


def _torch_device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LLMError(f"llm.device is {name!r} but this torch has no usable CUDA ({torch.__version__}); set llm.device = \"cpu\"")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise LLMError(f"llm.device {name!r} is not a torch device: {exc}") from exc


def _torch_dtype(dtype: str, device: Any) -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type != "cuda":
        return torch.float32  # CPU half precision is slow or unsupported for many kernels
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class TransformersLLM:
    """A causal LM with a chat template (``AutoModelForCausalLM`` + ``AutoTokenizer``)."""

    name = "transformers"

    def __init__(self, cfg: LLMConfig) -> None:
        force_offline()
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise LLMError("the transformers backend needs transformers (pip install transformers)") from exc
        try:
            path = locate_hf_causal_lm(cfg.model)
        except ModelError as exc:
            raise LLMError(str(exc)) from exc
        self.cfg = cfg
        self.model_path = path
        self.device = _torch_device(cfg.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        try:
            self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                str(path), local_files_only=True, dtype=_torch_dtype(cfg.dtype, self.device)
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LLMError(f"cannot load transformers model {path}: {first}") from exc
        if not getattr(self._tok, "chat_template", None):
            raise LLMError(f"model {path} has no chat template: use an instruct (chat) model")
        self._model = model.to(self.device).eval()
        limit = getattr(model.config, "max_position_embeddings", None) or cfg.n_ctx
        self.n_ctx = min(cfg.n_ctx, int(limit))
        self._pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self._tok.eos_token_id
        self.tokens_generated = 0
        """Tokens produced over the model's life (tests use it to check cancellation)."""

    def warmup(self) -> None:
        for _ in self.stream([{"role": "user", "content": "Hi"}], threading.Event(), max_tokens=2):
            pass

    def stream(
        self, messages: Sequence[Message], cancel: threading.Event, max_tokens: int | None = None
    ) -> Iterator[str]:
        """Yield decoded text as it is generated; stop within one token of ``cancel``."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        c = self.cfg
        max_new = max_tokens or c.max_tokens
        inputs = self._prompt(messages, max_new)
        stop = threading.Event()  # set when the caller is done reading, whatever the reason
        llm = self

        class _Stop(StoppingCriteria):
            """Called by ``generate`` after each new token: count it, and stop on cancel."""

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                llm.tokens_generated += 1
                done = cancel.is_set() or stop.is_set()
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        streamer = TextIteratorStreamer(self._tok, skip_prompt=True, skip_special_tokens=True)
        kwargs: dict[str, Any] = dict(
            **inputs,
            max_new_tokens=max_new,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Stop()]),
            repetition_penalty=c.repeat_penalty,
            pad_token_id=self._pad_id,
        )
        if c.temperature > 0:
            kwargs.update(do_sample=True, temperature=c.temperature, top_p=c.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None)
        failure: list[BaseException] = []
        worker = threading.Thread(target=self._generate, args=(kwargs, streamer, failure), name="llm-generate", daemon=True)
        worker.start()
        try:
            for text in streamer:
                if cancel.is_set():
                    break
                if text:
                    yield text
        finally:
            stop.set()
            worker.join()
        if failure and not cancel.is_set():
            raise LLMError(f"generation failed in {self.model_path}: {failure[0]}") from failure[0]

    def _generate(self, kwargs: dict[str, Any], streamer: Any, failure: list[BaseException]) -> None:
        import torch

        try:
            # Seeded per reply, like the llama.cpp backend: the same history gives the same
            # answer. (The RNG is process-wide; nothing else samples while a reply is made.)
            torch.manual_seed(self.cfg.seed)
            with torch.inference_mode():
                self._model.generate(**kwargs)
        except Exception as exc:  # crosses the thread: re-raised as LLMError by stream()
            failure.append(exc)
            streamer.end()

    def _prompt(self, messages: Sequence[Message], max_new: int) -> dict[str, Any]:
        """Token ids of the chat-templated history, oldest turns dropped to fit ``n_ctx``."""
        from jinja2 import TemplateError

        msgs = list(messages)
        while True:
            try:
                enc = self._tok.apply_chat_template(
                    msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
                )
            except (TemplateError, ValueError, TypeError) as exc:
                raise LLMError(f"the chat template of {self.model_path} rejected the messages: {exc}") from exc
            n = enc["input_ids"].shape[1]
            droppable = [i for i, m in enumerate(msgs) if m.get("role") != "system"]
            if n + max_new <= self.n_ctx or len(droppable) <= 1:
                break
            del msgs[droppable[0]]
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
