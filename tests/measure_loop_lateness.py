"""Event-loop lateness while a slow policy (20 ms a frame) and a slow final ASR (150 ms) run.

Not a test (the assertion lives in test_engine_timeline.py); prints the numbers the issue-12
engine note quotes. Usage, from the repository root::

    .venv/bin/python tests/measure_loop_lateness.py            # this engine
    .venv/bin/python tests/measure_loop_lateness.py OLD.py     # another engine.py, e.g. from git show
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import harness  # noqa: E402
from test_engine_timeline import SLOW_FINAL_S, SLOW_POLICY_S, loop_lateness_while  # noqa: E402

from duplex.events import Decision  # noqa: E402


def main(engine_file: str | None, trials: int = 3) -> None:
    if engine_file:
        spec = importlib.util.spec_from_file_location("duplex.engine_under_test", engine_file)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        harness.Engine = mod.Engine  # type: ignore[attr-defined]
    script = [harness.says("tell me about the moon", 0.0, 0.6)]

    def end_in_hangover(x):
        return Decision.END_OF_TURN if x.user_turn_open and x.user_speaking and x.silence >= 0.1 else None

    for _ in range(trials):
        policy = harness.ScriptedPolicy(rule=end_in_hangover, step_delay_s=SLOW_POLICY_S)
        asr = harness.FakeASR(script, finish_delay_s=SLOW_FINAL_S)
        models = harness.make_models(script, asr=asr, llm=harness.FakeLLM(["Yes."]))
        _, lates = asyncio.run(loop_lateness_while(
            harness.arun_timeline(script, policy=policy, models=models, duration=1.0, realtime=True)))
        lates.sort()
        n = len(lates)
        sys.stdout.write(f"beats={n} p50={lates[n // 2] * 1000:.2f} ms p99={lates[int(n * 0.99)] * 1000:.2f} ms "
                         f"max={lates[-1] * 1000:.2f} ms policy thread={sorted(policy.threads)}\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
