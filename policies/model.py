"""The duplex predictor: a small causal Transformer over per-frame conversation features.

One readable file, after nanoGPT. Every 32 ms frame becomes a token (the feature
vector of :mod:`policies.features`); attention is causal and limited to the last
``window`` frames, with ALiBi distance biases instead of positions, so the model runs on
an endless stream with a fixed-size KV cache and gives exactly what a full-sequence
pass gives. Two heads read the same trunk:

* ``agent`` (meaningful while the agent speaks): continue / backchannel / barge_in;
* ``user`` (meaningful while the user has the floor): hold / end_of_turn /
  backchannel_opportunity.

:class:`DuplexPredictor` is the torch module (training, full sequences);
:class:`StreamingPredictor` is the same network in numpy, one frame at a time, for the
engine (no torch call overhead on the 32 ms tick).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from policies.features import N_FEATURES


@dataclass(frozen=True)
class ModelConfig:
    n_features: int = N_FEATURES
    n_embd: int = 64
    n_head: int = 4
    n_layer: int = 2
    window: int = 96
    """Frames a position attends to, itself included (96 x 32 ms = 3.1 s)."""
    dropout: float = 0.1
    n_agent: int = 3
    n_user: int = 3

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head slopes of the linear distance penalty (Press et al.), gentler than the paper's."""
    return torch.tensor([2.0 ** (-(h + 1) * 4.0 / n_head) for h in range(n_head)], dtype=torch.float32)


def window_bias(t: int, window: int, slopes: torch.Tensor) -> torch.Tensor:
    """Additive attention bias ``(H, T, T)``: ALiBi inside the causal window, -inf outside."""
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    dist = (i - j).float()  # (T, T)
    allowed = (dist >= 0) & (dist < window)
    bias = -slopes[:, None, None] * dist[None]  # (H, T, T)
    return bias.masked_fill(~allowed[None], float("-inf"))


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be a multiple of n_head"
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape  # (B, T, C)
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias[None], dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, hd)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), bias)
        return x + self.mlp(self.ln_2(x))


class DuplexPredictor(nn.Module):
    """Features ``(B, T, F)`` in, per-frame logits of both heads out."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("feat_mean", torch.zeros(cfg.n_features))
        self.register_buffer("feat_std", torch.ones(cfg.n_features))
        self.register_buffer("slopes", alibi_slopes(cfg.n_head))
        self.inp = nn.Linear(cfg.n_features, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head_agent = nn.Linear(cfg.n_embd, cfg.n_agent)
        self.head_user = nn.Linear(cfg.n_embd, cfg.n_user)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, f = x.shape  # (B, T, F)
        assert f == self.cfg.n_features, f"expected {self.cfg.n_features} features, got {f}"
        h = self.drop(self.inp((x - self.feat_mean) / self.feat_std))  # (B, T, C)
        bias = window_bias(t, self.cfg.window, self.slopes).to(h.dtype)  # (H, T, T)
        for block in self.blocks:
            h = block(h, bias)
        h = self.ln_f(h)
        return self.head_agent(h), self.head_user(h)  # (B, T, n_agent), (B, T, n_user)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# --- streaming inference ---------------------------------------------------------------


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = x - x.mean()
    return d * (w / math.sqrt(float(d @ d) / d.size + 1e-5)) + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x**3)))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class StreamingPredictor:
    """The network in numpy with a ring-buffer KV cache of ``window`` frames per layer."""

    def __init__(self, cfg: ModelConfig, state: dict[str, torch.Tensor]) -> None:
        self.cfg = cfg
        w = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}
        self.mean, self.std = w["feat_mean"], w["feat_std"]
        self.slopes = w["slopes"].astype(np.float32)
        self.w_in, self.b_in = w["inp.weight"].T.copy(), w["inp.bias"]
        self.layers = []
        for i in range(cfg.n_layer):
            p = f"blocks.{i}."
            self.layers.append(
                tuple(
                    w[p + n].T.copy() if n.endswith("weight") and w[p + n].ndim == 2 else w[p + n]
                    for n in (
                        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                        "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                        "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
                    )
                )
            )
        self.ln_f = (w["ln_f.weight"], w["ln_f.bias"])
        self.head_agent = (w["head_agent.weight"].T.copy(), w["head_agent.bias"])
        self.head_user = (w["head_user.weight"].T.copy(), w["head_user.bias"])
        self.reset()

    def reset(self) -> None:
        c = self.cfg
        hd = c.n_embd // c.n_head
        self.k = np.zeros((c.n_layer, c.n_head, c.window, hd), dtype=np.float32)
        self.v = np.zeros((c.n_layer, c.n_head, c.window, hd), dtype=np.float32)
        self.slot_pos = np.full(c.window, -(10**9), dtype=np.int64)
        self.pos = 0

    def step(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame's features ``(F,)`` → agent and user probabilities, ``(3,)`` each."""
        c = self.cfg
        hd = c.n_embd // c.n_head
        slot = self.pos % c.window
        self.slot_pos[slot] = self.pos
        dist = (self.pos - self.slot_pos).astype(np.float32)  # (W,)
        valid = dist < c.window
        bias = np.where(valid[None, :], -self.slopes[:, None] * dist[None, :], -np.inf)  # (H, W)
        h = ((x - self.mean) / self.std) @ self.w_in + self.b_in  # (C,)
        scale = 1.0 / math.sqrt(hd)
        for i, (l1w, l1b, aw, ab, pw, pb, l2w, l2b, fw, fb, mw, mb) in enumerate(self.layers):
            a = _layer_norm(h, l1w, l1b)
            q, k, v = np.split(a @ aw + ab, 3)  # (C,) each
            self.k[i, :, slot] = k.reshape(c.n_head, hd)
            self.v[i, :, slot] = v.reshape(c.n_head, hd)
            att = np.matmul(self.k[i], q.reshape(c.n_head, hd, 1))[..., 0] * scale + bias  # (H, W)
            att = _softmax(att)
            y = np.matmul(att[:, None, :], self.v[i]).reshape(c.n_embd)  # (C,)
            h = h + y @ pw + pb
            h = h + _gelu(_layer_norm(h, l2w, l2b) @ fw + fb) @ mw + mb
        self.pos += 1
        h = _layer_norm(h, *self.ln_f)
        return _softmax(h @ self.head_agent[0] + self.head_agent[1]), _softmax(h @ self.head_user[0] + self.head_user[1])
