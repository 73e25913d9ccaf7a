"""Train the duplex predictor: ``python -m policies.train`` (or ``duplex train-policy``).

Steps, each cached or deterministic:

1. build the synthetic conversations and their features (:func:`policies.data.build`;
   skipped when ``policies/data/cache`` already has them);
2. fit :class:`policies.model.DuplexPredictor` on the ``train`` split with a fixed seed
   (random crops, gain and lexical-dropout augmentation, frame-wise cross-entropy on
   both heads) for a fixed number of steps (the ``dev`` loss is only reported);
3. tune the decision thresholds by running the streaming policy on the ``dev`` cases
   (held-out voices) through the evaluation harness (``--tune-only`` redoes just this);
4. write ``policies/weights/predictor.pt`` and ``predictor.json``.

Same seed, same data, same thread count → identical weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from duplex.clock import PerfTimer
from duplex.errors import PolicyError
from policies.features import FEATURE_NAMES, LEXICAL, N_FEATURES, N_MEL, N_MEL_PLAY
from policies.model import DuplexPredictor, ModelConfig
from policies.tune import fit_decisions

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch: int = 16
    seq_len: int = 192
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: int = 50
    seed: int = 1337
    threads: int = 1
    eval_every: int = 200
    lexical_dropout: float = 0.25
    gain_jitter_db: float = 8.0
    agent_class_weights: tuple[float, float, float] = (1.0, 3.0, 2.5)
    user_class_weights: tuple[float, float, float] = (1.0, 1.5, 0.5)


@dataclass(frozen=True)
class Conversation:
    x: np.ndarray  # (T, F)
    agent_target: np.ndarray  # (T,)
    user_target: np.ndarray  # (T,)


def load_split(directory: Path) -> list[Conversation]:
    files = sorted(directory.glob("*.npz"))
    files = [f for f in files if not f.name.endswith(".targets.npz")]
    if not files:
        raise PolicyError(f"no featurised conversations in {directory} (run python -m policies.data)")
    out = []
    for f in files:
        z = np.load(f)
        if z["x"].shape[1] != N_FEATURES:
            raise PolicyError(f"{f} has {z['x'].shape[1]} features, expected {N_FEATURES}: delete the cache and regenerate")
        out.append(Conversation(z["x"], z["agent_target"].astype(np.int64), z["user_target"].astype(np.int64)))
    return out


def feature_stats(data: list[Conversation]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([c.x for c in data])
    return x.mean(axis=0), np.maximum(x.std(axis=0), 0.05)


_MIC_MEL = slice(0, N_MEL)
_MIC_DB = FEATURE_NAMES.index("mic_db")
_PLAY_MEL = slice(FEATURE_NAMES.index("play_mel0"), FEATURE_NAMES.index("play_mel0") + N_MEL_PLAY)
_PLAY_DB = FEATURE_NAMES.index("play_db")
_DIFF_DB = FEATURE_NAMES.index("mic_minus_play_db")


def augment(x: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """Whole-sequence augmentation in feature space: mic and playback gains, no words."""
    x = x.copy()
    g_mic, g_play = rng.uniform(-cfg.gain_jitter_db, cfg.gain_jitter_db, size=2)
    # The featuriser's scales: mel log10(power)/3, dB/25, difference dB/20.
    x[:, _MIC_MEL] += g_mic / 30.0
    x[:, _MIC_DB] += g_mic / 25.0
    x[:, _PLAY_MEL] += g_play / 30.0
    x[:, _PLAY_DB] += g_play / 25.0
    x[:, _DIFF_DB] += (g_mic - g_play) / 20.0
    if rng.random() < cfg.lexical_dropout:
        x[:, LEXICAL] = 0.0
    return x


def make_batch(
    data: list[Conversation], rng: np.random.Generator, cfg: TrainConfig, train: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ats, uts = [], [], []
    for _ in range(cfg.batch):
        c = data[int(rng.integers(0, len(data)))]
        t = len(c.x)
        s = int(rng.integers(0, max(1, t - cfg.seq_len)))
        e = min(t, s + cfg.seq_len)
        x = np.zeros((cfg.seq_len, N_FEATURES), dtype=np.float32)
        at = np.full(cfg.seq_len, -1, dtype=np.int64)
        ut = np.full(cfg.seq_len, -1, dtype=np.int64)
        x[: e - s] = augment(c.x[s:e], rng, cfg) if train else c.x[s:e]
        at[: e - s] = c.agent_target[s:e]
        ut[: e - s] = c.user_target[s:e]
        xs.append(x)
        ats.append(at)
        uts.append(ut)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ats)), torch.from_numpy(np.stack(uts))


def loss_fn(
    model: DuplexPredictor, x: torch.Tensor, at: torch.Tensor, ut: torch.Tensor, cfg: TrainConfig
) -> torch.Tensor:
    la, lu = model(x)  # (B, T, 3) each
    wa = torch.tensor(cfg.agent_class_weights)
    wu = torch.tensor(cfg.user_class_weights)
    loss_a = F.cross_entropy(la.reshape(-1, la.size(-1)), at.reshape(-1), weight=wa, ignore_index=-1)
    loss_u = F.cross_entropy(lu.reshape(-1, lu.size(-1)), ut.reshape(-1), weight=wu, ignore_index=-1)
    return loss_a + loss_u


@torch.inference_mode()
def full_loss(model: DuplexPredictor, data: list[Conversation], cfg: TrainConfig) -> float:
    """Mean loss over whole conversations (no crops, no augmentation)."""
    model.eval()
    total = 0.0
    for c in data:
        x = torch.from_numpy(c.x)[None]
        total += float(loss_fn(model, x, torch.from_numpy(c.agent_target)[None], torch.from_numpy(c.user_target)[None], cfg))
    model.train()
    return total / max(1, len(data))


def fit(
    train: list[Conversation],
    dev: list[Conversation] | None,
    mcfg: ModelConfig,
    cfg: TrainConfig,
    progress: bool = True,
) -> tuple[DuplexPredictor, dict[str, float]]:
    """Train from scratch; deterministic for a given seed and thread count."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(cfg.seed)
    model = DuplexPredictor(mcfg)
    mean, std = feature_stats(train)
    model.feat_mean.copy_(torch.from_numpy(mean))
    model.feat_std.copy_(torch.from_numpy(std))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )
    best = (math.inf, {k: v.clone() for k, v in model.state_dict().items()}, 0)
    info: dict[str, float] = {}
    bar = tqdm(range(cfg.steps), desc="train", unit="step", disable=not progress)
    for step in bar:
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        x, at, ut = make_batch(train, rng, cfg)
        loss = loss_fn(model, x, at, ut, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if dev and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            d = full_loss(model, dev, cfg)
            if d < best[0]:
                best = (d, {k: v.clone() for k, v in model.state_dict().items()}, step + 1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", dev=f"{d:.3f}")
    if dev:
        model.load_state_dict(best[1])
        info = {"dev_loss": round(best[0], 4), "best_step": best[2]}
    model.eval()
    return model, info


def save(model: DuplexPredictor, meta: dict, out_dir: Path = WEIGHTS_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "predictor.pt"
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    meta = {"model": model.cfg.to_dict(), "features": list(FEATURE_NAMES), **meta}
    (out_dir / "predictor.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """Training's arguments (shared by ``python -m policies.train`` and ``duplex train-policy``)."""
    ap.add_argument("--data", type=Path, default=None, help="data cache (default policies/data/cache)")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"where predictor.pt/.json go (default {WEIGHTS_DIR})")
    ap.add_argument("--steps", type=int, default=TrainConfig.steps, help=f"training steps (default {TrainConfig.steps})")
    ap.add_argument("--seed", type=int, default=TrainConfig.seed, help=f"random seed (default {TrainConfig.seed})")
    ap.add_argument("--threads", type=int, default=TrainConfig.threads,
                    help=f"torch threads (default {TrainConfig.threads}); same seed, data and threads give the same weights")
    ap.add_argument("--workers", type=int, default=2, help="processes for data generation")
    ap.add_argument("--no-tune", action="store_true", help="keep default thresholds (skip the dev-set search)")
    ap.add_argument("--no-early-stop", action="store_true",
                    help="keep the last step's weights instead of those with the lowest dev loss")
    ap.add_argument("--tune-only", action="store_true", help="only redo the threshold search for the weights in --out")
    ap.add_argument("--audio-eou", action="store_true",
                    help="fuse smart-turn v3.2's audio end-of-utterance probability into the end of turn (needs pipecat-ai)")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``duplex train-policy`` parses the same arguments and calls :func:`run`)."""
    ap = argparse.ArgumentParser(prog="python -m policies.train", description="Train the duplex predictor.")
    add_arguments(ap)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(a)


def run(a: argparse.Namespace) -> int:
    """Train (or ``--tune-only``) as the parsed arguments say; progress goes to the log."""
    from policies import data as gen

    t0 = PerfTimer.now()
    root = a.data or gen.CACHE
    if a.tune_only:
        meta_path = a.out / "predictor.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        audio = bool(a.audio_eou or meta.get("audio_eou", False))
        meta["audio_eou"] = audio
        meta["decision"] = fit_decisions(a.out / "predictor.pt", sorted((root / "dev").glob("*.wav")),
                                         text_eou=bool(meta.get("text_eou", True)), audio_eou=audio)
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return 0
    if a.data is None:
        gen.build(workers=a.workers, out=root)
    t_data = PerfTimer.now() - t0
    train = load_split(root / "train")
    dev_dir = root / "dev"
    have_dev = dev_dir.exists() and any(dev_dir.glob("*.npz"))
    cfg = replace(TrainConfig(), steps=a.steps, seed=a.seed, threads=a.threads)
    mcfg = ModelConfig()
    log.info("training on %d conversations (%d frames)", len(train), sum(len(c.x) for c in train))
    t1 = PerfTimer.now()
    model, info = fit(train, load_split(dev_dir) if have_dev and not a.no_early_stop else None, mcfg, cfg)
    t_train = PerfTimer.now() - t1
    meta: dict = {"train": {**cfg.__dict__, **info, "conversations": len(train), "seconds": round(t_train, 1)}}
    save(model, meta, a.out)
    if have_dev:
        meta["train"]["dev_loss"] = round(full_loss(model, load_split(dev_dir), cfg), 4)
        save(model, meta, a.out)
    if not a.no_tune and have_dev:
        meta["audio_eou"] = bool(a.audio_eou)
        meta["decision"] = fit_decisions(a.out / "predictor.pt", sorted(dev_dir.glob("*.wav")), audio_eou=bool(a.audio_eou))
        save(model, meta, a.out)
    log.info(
        "wrote %s (%d parameters); data %.0f s, training %.0f s, total %.0f s",
        a.out / "predictor.pt", model.n_params(), t_data, t_train, PerfTimer.now() - t0,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
