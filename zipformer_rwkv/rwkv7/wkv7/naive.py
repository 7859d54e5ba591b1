"""Step-by-step WKV7 recurrence: the reference every fast path is tested against.

The recurrence of the RWKV-7 paper (arXiv 2503.14456) as BlinkDL's code runs it (`RWKV_x070` time-mix,
`rwkv/cuda/rwkv7.cu`). Per batch and head, with the
state S in BlinkDL's [value, key] layout (S[i, j], i = value index, j = key index)::

    sa_t   = S_{t-1} a_t                                   (a = alpha = -kk)
    S_t    = S_{t-1} diag(exp(w_t)) + sa_t b_t^T + v_t k_t^T   (b = beta = kk * a_in)
    out_t  = S_t r_t                                        (read-out after the update, scale 1)

Plain torch ops, so autograd gives the reference gradients. Runs in float64 when given float64 inputs.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def wkv7_naive(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """One time step at a time (O(T) Python loop); the float64-capable reference.

    Args:
      r, w, k, a, b: (B, T, H, K); w is the log-decay (decay = exp(w), w <= 0).
      v: (B, T, H, V) (V = K for RWKV-7).
      state: (B, H, V, K) initial state in [value, key] layout, or None for zeros.

    Returns:
      out: (B, T, H, V) in the dtype of `r`;
      final_state: (B, H, V, K) in float64 for float64 inputs, else float32.
    """
    in_dtype = r.dtype
    cdt = compute_dtype(in_dtype)
    B, T, H, K = r.shape
    V = v.shape[-1]
    r, w, k, v, a, b = (x.to(cdt) for x in (r, w, k, v, a, b))
    if state is None:
        S = r.new_zeros(B, H, V, K)
    else:
        S = state.to(cdt)
    outs = []
    for t in range(T):
        sa = torch.einsum("bhij,bhj->bhi", S, a[:, t])
        S = (
            S * torch.exp(w[:, t]).unsqueeze(-2)
            + sa.unsqueeze(-1) * b[:, t].unsqueeze(-2)
            + v[:, t].unsqueeze(-1) * k[:, t].unsqueeze(-2)
        )
        outs.append(torch.einsum("bhij,bhj->bhi", S, r[:, t]))
    out = torch.stack(outs, dim=1) if T > 0 else r.new_zeros(B, 0, H, V)
    return out.to(in_dtype), S
