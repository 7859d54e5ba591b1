"""Chunked WKV7 in plain PyTorch (the CPU default): chunk-parallel algebra, sequential only over chunks.

Derivation (own, from the recurrence in `rwkv7.md` §1.3; the WY/UT idea of the delta-rule literature).
Work with h = S^T (key x value). In a chunk of L steps starting from state h0, let g_t = sum_{s<=t} w_s
(inclusive cumulative log-decay), g'_t = g_t - w_t (exclusive) and G = g_L. Unrolling the recurrence,

    S_t = S_0 diag(e^{g_t}) + sum_{s<=t} (v_s k_s^T + sa_s b_s^T) diag(e^{g_t - g_s}),   sa_t = S_{t-1} a_t.

With the rescaled rows  r~ = r e^{g},  a~ = a e^{g'},  k^ = k e^{-g},  b^ = b e^{-g}  and the L x L
matrices  A_ab = stril(a~ b^T), A_ak = stril(a~ k^T), A_rb = tril(r~ b^T), A_rk = tril(r~ k^T):

    SA  = (I - A_ab)^{-1} (a~ h0 + A_ak V)           = W h0 + U        (triangular solve)
    O   = r~ h0 + A_rk V + A_rb SA                    = Q h0 + O_intra
    h_L = diag(e^G) h0 + (k e^{G-g})^T V + (b e^{G-g})^T SA = M h0 + C

so everything except the K x K carry  h_{c+1} = M_c h_c + C_c  runs batched over all chunks at once.
The factors e^{-g} grow like exp(0.6065 L) for RWKV-7's decay bound (w >= -0.6065); L = 16..64 is safe
in float32. Gradients come from autograd through these ops.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from zipformer_rwkv.rwkv7.wkv7.naive import compute_dtype

# |sum of w over one chunk| above which exp(-g) could overflow float32 (e^88 ~ 1.6e38), with margin.
_MAX_CHUNK_LOG_DECAY = 60.0


def _to_chunks(x: Tensor, n_chunks: int, L: int) -> Tensor:
    """(B, T, H, D) -> (B, H, n_chunks, L, D), zero-padding T up to n_chunks * L."""
    B, T, H, D = x.shape
    pad = n_chunks * L - T
    x = x.transpose(1, 2)
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(B, H, n_chunks, L, D)


def wkv7_chunked(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Optional[Tensor] = None,
    chunk_size: int = 16,
) -> Tuple[Tensor, Tensor]:
    """Chunked WKV7; same contract as `wkv7_naive` (shapes (B, T, H, K), state (B, H, V, K)).

    Computes in float32 (float64 for float64 inputs). Padding steps use w = 0 and zero vectors,
    which leave the state unchanged, so any T works.

    Raises:
      ValueError: if chunk_size * min(w) < -60 (exp(-cumsum(w)) would overflow; RWKV-7's
        w = -0.6065 * sigmoid(.) never gets there for chunk_size <= 64).
    """
    in_dtype = r.dtype
    cdt = compute_dtype(in_dtype)
    B, T, H, K = r.shape
    V = v.shape[-1]
    L = int(chunk_size)
    if state is None:
        h = r.new_zeros(B, H, K, V, dtype=cdt)
    else:
        h = state.to(cdt).transpose(-1, -2)
    if T == 0:
        return r.new_zeros(B, 0, H, V), h.transpose(-1, -2).contiguous()
    w_min = float(w.detach().min())
    if w_min * L < -_MAX_CHUNK_LOG_DECAY:
        raise ValueError(
            f"wkv7_chunked: min(w) = {w_min:.3g} with chunk_size = {L} would overflow exp(-cumsum(w)); "
            "w must be a log-decay >= -0.6065 as RWKV-7 produces, or use a smaller chunk_size"
        )
    n = math.ceil(T / L)
    r, w, k, a, b = (_to_chunks(x.to(cdt), n, L) for x in (r, w, k, a, b))
    v = _to_chunks(v.to(cdt), n, L)

    g = w.cumsum(-2)
    g_last = g[..., -1:, :]
    r_t = r * g.exp()
    a_t = a * (g - w).exp()
    inv = (-g).exp()
    k_h, b_h = k * inv, b * inv
    to_end = (g_last - g).exp()
    k_d, b_d = k * to_end, b * to_end

    A_ab = (a_t @ b_h.transpose(-1, -2)).tril(-1)
    A_ak = (a_t @ k_h.transpose(-1, -2)).tril(-1)
    A_rb = (r_t @ b_h.transpose(-1, -2)).tril()
    A_rk = (r_t @ k_h.transpose(-1, -2)).tril()
    eye = torch.eye(L, dtype=cdt, device=r.device)
    WU = torch.linalg.solve_triangular(
        eye - A_ab, torch.cat([a_t, A_ak @ v], dim=-1), upper=False, unitriangular=True
    )
    W, U = WU[..., :K], WU[..., K:]
    Q = r_t + A_rb @ W  # (B, H, n, L, K)
    O_intra = A_rk @ v + A_rb @ U  # (B, H, n, L, V)
    M = torch.diag_embed(g_last.squeeze(-2).exp()) + b_d.transpose(-1, -2) @ W  # (B, H, n, K, K)
    C = k_d.transpose(-1, -2) @ v + b_d.transpose(-1, -2) @ U  # (B, H, n, K, V)

    starts = []
    for c in range(n):
        starts.append(h)
        h = M[:, :, c] @ h + C[:, :, c]
    h_start = torch.stack(starts, dim=2)  # (B, H, n, K, V)
    out = (Q @ h_start + O_intra).reshape(B, H, n * L, V)[:, :, :T]
    return out.transpose(1, 2).to(in_dtype), h.transpose(-1, -2).contiguous()
