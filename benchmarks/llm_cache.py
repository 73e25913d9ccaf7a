"""LLM benchmark: time to first token per turn, conversation kept in the KV cache or not.

    .venv/bin/python benchmarks/llm_cache.py

One 4-turn conversation through the packaged SmolLM2 on llama.cpp (``LlamaCppLLM``), the
same prompts both ways:

* ``conversation cached``: what duplex does. ``History`` renders append-only, so llama.cpp
  re-reads only the new user turn.
* ``system prompt only``: the cache is cut back to the system prompt before every reply
  (what duplex did before), so the whole conversation is re-read every turn.

Prints a table and writes ``benchmarks/results/llm_cache.json``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.clock import PerfTimer  # noqa: E402
from duplex.config import load_config  # noqa: E402
from duplex.history import History  # noqa: E402
from duplex.stages.llm import LlamaCppLLM  # noqa: E402

TURNS = ("hello can you tell me something about the moon", "wait what about mars",
         "and how far away is it", "thank you that is all")
RESULTS = ROOT / "benchmarks" / "results" / "llm_cache.json"


def system_prefix(llm: LlamaCppLLM, system: str) -> int:
    """Tokens the rendered prompts share before the first user message."""
    from llama_cpp import Llama

    ids = []
    for probe in ("Hi", "Yo"):
        for _ in llm.stream([{"role": "system", "content": system}, {"role": "user", "content": probe}],
                            threading.Event(), max_tokens=1):
            pass
        ids.append(list(llm._llm._input_ids))
    return Llama.longest_token_prefix(ids[0], ids[1])


def conversation(llm: LlamaCppLLM, system: str, prefix: int, every_turn: bool) -> list[float]:
    """TTFT per turn; the cache starts at the system prompt, and returns there before
    every turn when ``every_turn``."""
    history = History(system)
    ttft = []
    for k, text in enumerate(TURNS):
        history.add_user(text)
        if k == 0 or every_turn:
            llm._llm.n_tokens = min(llm._llm.n_tokens, prefix)
        t0, first, reply = PerfTimer.now(), None, ""
        for piece in llm.stream(history.messages(), threading.Event()):
            first = first if first is not None else PerfTimer.now() - t0
            reply += piece
        ttft.append(round((first or 0.0) * 1000, 1))
        history.add_agent(reply)
    return ttft


def main() -> int:
    cfg = load_config()
    llm = LlamaCppLLM(cfg.llm)
    llm.warmup()
    cut = system_prefix(llm, cfg.llm.system_prompt)
    runs = {"system prompt only": conversation(llm, cfg.llm.system_prompt, cut, every_turn=True),
            "conversation cached": conversation(llm, cfg.llm.system_prompt, cut, every_turn=False)}
    print("\n| time to first token (ms) | " + " | ".join(f"turn {k + 1}" for k in range(len(TURNS))) + " |")
    print("|---|" + "--:|" * len(TURNS))
    for name, ttft in runs.items():
        print(f"| {name} | " + " | ".join(f"{v:.0f}" for v in ttft) + " |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python benchmarks/llm_cache.py", "machine": platform.machine(), "cpus": os.cpu_count(),
        "model": cfg.llm.model, "turns": list(TURNS), "ttft_ms": runs,
    }, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
