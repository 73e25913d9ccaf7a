"""Make the README's screenshot with the app itself (Textual's ``save_screenshot``).

    .venv/bin/python -m tui.screenshot [--simulate examples/demo.toml] [--out docs/tui.svg]

Runs the scripted demo on the packaged models in lockstep (so the transcript is the same
every time), headless at ``--size``, and saves an SVG once the agent has been speaking
its ``--turn``'th reply for ``--after`` seconds of session time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from duplex.events import Event, TurnLatency

ROOT = Path(__file__).resolve().parent.parent


async def shoot(cfg: object, models: object, script: str, out: Path, size: tuple[int, int], turn: int,
                after: float) -> str:
    from duplex.app import make_source
    from tui.app import DuplexApp
    from tui.session import LiveSession

    import tempfile

    source = make_source(None, script, models, realtime=False)  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix="duplex-shot-")) / "sessions" / "demo"
    session = LiveSession(cfg, models, source, tmp,  # type: ignore[arg-type]
                          title=f"duplex talk --simulate {Path(script).name}")
    ready = asyncio.Event()
    due: list[float] = []

    run = session.run

    async def run_watching(publish):  # type: ignore[no-untyped-def]
        def watch(ev: Event) -> None:
            publish(ev)
            if isinstance(ev, TurnLatency) and ev.turn == turn:
                due.append(ev.t + after)
            if due and ev.t >= due[0]:
                ready.set()

        await run(watch)
        ready.set()  # the session ended first: take what there is

    session.run = run_watching  # type: ignore[method-assign]
    app = DuplexApp(session)
    async with app.run_test(size=size) as pilot:
        await ready.wait()
        app.flush_events()
        await pilot.pause(0.3)
        path = app.save_view(out)
        session.end("screenshot taken")
        for _ in range(200):
            if app.finished:
                break
            await pilot.pause(0.05)
    return path


def main(argv: list[str] | None = None) -> int:
    from duplex.config import load_config
    from duplex.stages.factory import load_models
    from policies import make_policy

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--simulate", default=str(ROOT / "examples" / "demo.toml"))
    p.add_argument("--out", default=str(ROOT / "docs" / "tui.svg"))
    p.add_argument("--size", default="130x42", help="columns x rows")
    p.add_argument("--turn", type=int, default=3, help="shoot during this agent turn")
    p.add_argument("--after", type=float, default=2.0, help="seconds of session time into that turn")
    p.add_argument("--config", "-c", help="profile (default: configs/default.toml)")
    a = p.parse_args(argv)
    cols, rows = (int(x) for x in a.size.lower().split("x"))
    cfg = load_config(a.config)
    print("loading models...", file=sys.stderr)
    models = load_models(cfg, make_policy)
    path = asyncio.run(shoot(cfg, models, a.simulate, Path(a.out), (cols, rows), a.turn, a.after))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
