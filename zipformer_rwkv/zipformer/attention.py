"""Zipformer2 attention modules: positional encoding, shared attention weights, value-only
self-attention and non-linear attention (icefall's `zipformer/zipformer.py`; Zipformer paper,
arXiv 2310.11230).

Layout is time-first: sequences are (T, N, C); attention weights are (H, N, T_query, T_key).
"""
import copy
import math
import random
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from zipformer_rwkv.zipformer.scaling import (
    Balancer,
    Dropout2,
    FloatLike,
    ScaledLinear,
    ScheduledFloat,
    Whiten,
    _whitening_schedule,
    penalize_abs_values_gt,
)


class CompactRelPositionalEncoding(nn.Module):
    """Relative positional embeddings with log-compressed, atan-squashed offsets (icefall's
    `CompactRelPositionalEncoding`).

    For offset x: x_c = c * sign(x) * (log(|x| + c) - log c), c = sqrt(D);
    a = atan(x_c / (length_factor * D / (2 pi))); pe[2i] = cos(a (i+1)), pe[2i+1] = sin(a (i+1));
    pe[D-1] = 1. Row k of the returned (1, L + T - 1, D) tensor is offset k - (L - 1), where
    L = T + left_context_len, i.e. offsets -(L-1) .. (T-1) measured as key minus query position.
    The table is a plain attribute (no buffer), regrown on demand.
    """

    def __init__(self, embed_dim: int, dropout_rate: FloatLike, max_len: int = 1000,
                 length_factor: float = 1.0):
        super().__init__()
        if embed_dim % 2 != 0:
            raise ValueError(f"pos_dim must be even, got {embed_dim}")
        if length_factor < 1.0:
            raise ValueError(f"length_factor must be >= 1, got {length_factor}")
        self.embed_dim = embed_dim
        self.length_factor = length_factor
        self.dropout = Dropout2(dropout_rate)
        self.pe: Optional[Tensor] = None
        self._extend_pe(max_len, torch.device("cpu"))

    def _extend_pe(self, t: int, device: torch.device) -> None:
        if self.pe is not None and self.pe.shape[0] >= 2 * t - 1:
            if self.pe.device != device:
                with torch.inference_mode(False):  # a cached table must stay a normal tensor
                    self.pe = self.pe.to(device)
            return
        with torch.inference_mode(False), torch.no_grad():
            x = torch.arange(-(t - 1), t, device=device, dtype=torch.float32).unsqueeze(1)
            freqs = 1 + torch.arange(self.embed_dim // 2, device=device)
            c = self.embed_dim ** 0.5
            x_compressed = c * x.sign() * ((x.abs() + c).log() - math.log(c))
            length_scale = self.length_factor * self.embed_dim / (2.0 * math.pi)
            x_atan = (x_compressed / length_scale).atan()
            pe = torch.zeros(x.shape[0], self.embed_dim, device=device)
            pe[:, 0::2] = (x_atan * freqs).cos()
            pe[:, 1::2] = (x_atan * freqs).sin()
            pe[:, -1] = 1.0
        self.pe = pe  # kept in float32; cast per call

    def forward(self, x: Tensor, left_context_len: int = 0) -> Tensor:
        """x: (T, N, C) (only T, device, dtype used). Returns (1, T + left + T - 1, D)."""
        t = x.shape[0]
        total = t + left_context_len
        self._extend_pe(total, x.device)
        mid = self.pe.shape[0] // 2
        pos_emb = self.pe[mid - total + 1: mid + t].to(x.dtype).unsqueeze(0)
        return self.dropout(pos_emb)


def _rel_to_abs(pos_scores: Tensor, t_query: int, t_key: int) -> Tensor:
    """(H, N, T_q, T_q + T_k - 1) relative scores -> (H, N, T_q, T_k) with
    out[..., i, j] = pos_scores[..., i, T_q - 1 - i + j]."""
    pos_scores = pos_scores.contiguous()
    h, n, _, _ = pos_scores.shape
    s0, s1, s2, s3 = pos_scores.stride()
    return pos_scores.as_strided((h, n, t_query, t_key), (s0, s1, s2 - s3, s3),
                                 storage_offset=pos_scores.storage_offset() + s3 * (t_query - 1))


class RelPositionMultiheadAttentionWeights(nn.Module):
    """Attention weights (H, N, T, T_key) from queries, keys and relative positions, computed
    once per layer and shared by `nonlin_attention`, `self_attn1` and `self_attn2`.

    scores = q.k + p.linear_pos(pos_emb) (no 1/sqrt(d): the in_proj init scale
    `query_head_dim ** -0.25` plays that role); masked positions get -1000; softmax over keys.
    `in_proj`: D -> H * (2 * query_head_dim + pos_head_dim); `linear_pos`: pos_dim -> H * pos_head_dim.
    """

    def __init__(self, embed_dim: int, pos_dim: int, num_heads: int, query_head_dim: int,
                 pos_head_dim: int, dropout: float = 0.0,
                 pos_emb_skip_rate: FloatLike = ScheduledFloat((0.0, 0.5), (4000.0, 0.0))):
        super().__init__()
        self.num_heads = num_heads
        self.query_head_dim = query_head_dim
        self.pos_head_dim = pos_head_dim
        self.dropout = dropout
        self.pos_emb_skip_rate = copy.deepcopy(pos_emb_skip_rate)
        in_dim = (2 * query_head_dim + pos_head_dim) * num_heads
        self.in_proj = ScaledLinear(embed_dim, in_dim, bias=True,
                                    initial_scale=query_head_dim ** -0.25)
        self.whiten_keys = Whiten(num_groups=num_heads,
                                  whitening_limit=_whitening_schedule(3.0),
                                  prob=(0.025, 0.1), grad_scale=0.025)
        self.balance_keys = Balancer(query_head_dim * num_heads, channel_dim=-1,
                                     min_positive=0.4, max_positive=0.6, min_abs=0.0,
                                     max_abs=100.0, prob=0.025)
        self.linear_pos = ScaledLinear(pos_dim, num_heads * pos_head_dim, bias=False,
                                       initial_scale=0.05)

    def _split(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """in_proj(x) (T, N, ...) -> q (H,N,T,dq), k (T,N,H*dq), p (H,N,T,dp)."""
        t, n, _ = x.shape
        h, dq = self.num_heads, self.query_head_dim
        q = x[..., : h * dq].reshape(t, n, h, dq).permute(2, 1, 0, 3)
        k = x[..., h * dq: 2 * h * dq]
        p = x[..., 2 * h * dq:].reshape(t, n, h, self.pos_head_dim).permute(2, 1, 0, 3)
        return q, k, p

    def _pos_scores(self, p: Tensor, pos_emb: Tensor, t_key: int) -> Tensor:
        h, _, t, dp = p.shape
        pos = self.linear_pos(pos_emb)  # (1 or N, T + T_key - 1, H * dp)
        pos = pos.reshape(pos.shape[0], pos.shape[1], h, dp).permute(2, 0, 3, 1)
        return _rel_to_abs(torch.matmul(p, pos), t, t_key)

    def forward(self, x: Tensor, pos_emb: Tensor, key_padding_mask: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None) -> Tensor:
        """x: (T, N, D); pos_emb: (1, 2T-1, pos_dim); key_padding_mask: (N, T) bool, True = pad;
        attn_mask: (T, T) bool, True = masked. Returns weights (H, N, T, T)."""
        t, n, _ = x.shape
        q, k, p = self._split(self.in_proj(x))
        k = self.whiten_keys(self.balance_keys(k))
        k = k.reshape(t, n, self.num_heads, self.query_head_dim).permute(2, 1, 3, 0)
        scores = torch.matmul(q, k)
        grad = torch.is_grad_enabled()
        if not self.training or random.random() >= float(self.pos_emb_skip_rate):
            pos_scores = self._pos_scores(p, pos_emb, t)
            scores = scores + pos_scores if grad else scores.add_(pos_scores)
        if self.training and random.random() < 0.1:
            scores = penalize_abs_values_gt(scores, limit=25.0, penalty=1.0e-04)
        # -1000 (not -inf) so fully-masked rows stay finite; exp(-1000) is exactly 0.
        for mask in (attn_mask, None if key_padding_mask is None else key_padding_mask[None, :, None, :]):
            if mask is not None and (grad or bool(mask.any())):
                scores = scores.masked_fill(mask, -1000.0) if grad else scores.masked_fill_(mask, -1000.0)
        weights = scores.softmax(dim=-1)
        return nn.functional.dropout(weights, p=self.dropout, training=self.training)

    def streaming_forward(self, x: Tensor, pos_emb: Tensor, cached_key: Tensor,
                          left_context_len: int,
                          key_padding_mask: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (T, N, D) chunk; cached_key: (L, N, H*dq); pos_emb: (1, 2T-1+L, pos_dim);
        key_padding_mask: (N, L + T). Returns weights (H, N, T, L + T) and the new key cache."""
        t, n, _ = x.shape
        q, k, p = self._split(self.in_proj(x))
        k = torch.cat([cached_key, k], dim=0)
        new_cache = k[-left_context_len:]
        t_key = k.shape[0]
        k = k.reshape(t_key, n, self.num_heads, self.query_head_dim).permute(2, 1, 3, 0)
        scores = torch.matmul(q, k) + self._pos_scores(p, pos_emb, t_key)
        scores = scores.masked_fill(key_padding_mask[None, :, None, :], -1000.0)
        return scores.softmax(dim=-1), new_cache


class SelfAttention(nn.Module):
    """Value path of attention with given weights: in_proj D -> H*dv, weighted sum over keys,
    out_proj H*dv -> D. (T, N, D) -> (T, N, D)."""

    def __init__(self, embed_dim: int, num_heads: int, value_head_dim: int):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, num_heads * value_head_dim, bias=True)
        self.out_proj = ScaledLinear(num_heads * value_head_dim, embed_dim, bias=True,
                                     initial_scale=0.05)
        self.whiten = Whiten(num_groups=1, whitening_limit=_whitening_schedule(7.5, ratio=3.0),
                             prob=(0.025, 0.25), grad_scale=0.01)

    def _attend(self, v: Tensor, attn_weights: Tensor, t: int) -> Tensor:
        h, n = attn_weights.shape[:2]
        v = v.reshape(v.shape[0], n, h, -1).permute(2, 1, 0, 3)  # (H, N, T_key, dv)
        out = torch.matmul(attn_weights, v)  # (H, N, T, dv)
        return self.out_proj(out.permute(2, 1, 0, 3).reshape(t, n, -1))

    def forward(self, x: Tensor, attn_weights: Tensor) -> Tensor:
        """x: (T, N, D); attn_weights: (H, N, T, T). Returns (T, N, D)."""
        return self.whiten(self._attend(self.in_proj(x), attn_weights, x.shape[0]))

    def streaming_forward(self, x: Tensor, attn_weights: Tensor, cached_val: Tensor,
                          left_context_len: int) -> Tuple[Tensor, Tensor]:
        """x: (T, N, D); attn_weights (H, N, T, L+T); cached_val (L, N, H*dv)."""
        v = torch.cat([cached_val, self.in_proj(x)], dim=0)
        return self._attend(v, attn_weights, x.shape[0]), v[-left_context_len:]


class NonlinAttention(nn.Module):
    """in_proj D -> 3 * hidden split into (s, x, y); out = out_proj(attn0 @ (x * tanh(s)) * y)
    where attn0 is head 0 of the shared attention weights. (T, N, D) -> (T, N, D)."""

    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.in_proj = nn.Linear(channels, hidden_channels * 3, bias=True)
        self.balancer = Balancer(hidden_channels, channel_dim=-1,
                                 min_positive=ScheduledFloat((0.0, 0.25), (20000.0, 0.05)),
                                 max_positive=ScheduledFloat((0.0, 0.75), (20000.0, 0.95)),
                                 min_abs=0.5, max_abs=5.0)
        self.out_proj = ScaledLinear(hidden_channels, channels, bias=True, initial_scale=0.05)
        self.whiten1 = Whiten(num_groups=1, whitening_limit=_whitening_schedule(5.0),
                              prob=(0.025, 0.25), grad_scale=0.01)
        self.whiten2 = Whiten(num_groups=1, whitening_limit=_whitening_schedule(5.0, ratio=3.0),
                              prob=(0.025, 0.25), grad_scale=0.01)

    def _gate(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        s, x, y = self.in_proj(x).chunk(3, dim=-1)
        s = torch.tanh(self.balancer(s))
        return self.whiten1(x) * s, y

    @staticmethod
    def _heads(x: Tensor, h: int) -> Tensor:
        return x.reshape(x.shape[0], x.shape[1], h, -1).permute(2, 1, 0, 3)

    def forward(self, x: Tensor, attn_weights: Tensor) -> Tensor:
        """x: (T, N, D); attn_weights: (1, N, T, T). Returns (T, N, D)."""
        t, n, _ = x.shape
        x, y = self._gate(x)
        x = torch.matmul(attn_weights, self._heads(x, attn_weights.shape[0]))
        x = x.permute(2, 1, 0, 3).reshape(t, n, -1) * y
        return self.whiten2(self.out_proj(x))

    def streaming_forward(self, x: Tensor, attn_weights: Tensor, cached_x: Tensor,
                          left_context_len: int) -> Tuple[Tensor, Tensor]:
        """x: (T, N, D); attn_weights (1, N, T, L+T); cached_x (1, N, L, hidden)."""
        t, n, _ = x.shape
        x, y = self._gate(x)
        x = torch.cat([cached_x, self._heads(x, attn_weights.shape[0])], dim=2)
        new_cache = x[:, :, -left_context_len:]
        x = torch.matmul(attn_weights, x).permute(2, 1, 0, 3).reshape(t, n, -1) * y
        return self.out_proj(x), new_cache
