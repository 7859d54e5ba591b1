"""Chunked WKV7 in plain PyTorch (the CPU default): chunk-parallel algebra, sequential only over chunks.

Derivation (own, from the recurrence in `naive.py`; the WY/UT idea of Yang et al., "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length", arXiv 2406.06484).
Work with h = S^T (key x value). In a chunk of L steps starting from state h0, let g_t = sum_{s<=t} w_s
(inclusive cumulative log-decay), g'_t = g_t - w_t (exclusive) and G = g_L. Unrolling the recurrence,

    S_t = S_0 diag(e^{g_t}) + sum_{s<=t} (v_s k_s^T + sa_s b_s^T) diag(e^{g_t - g_s}),   sa_t = S_{t-1} a_t.

With the rescaled rows  r~ = r e^{g},  a~ = a e^{g'},  k^ = k e^{-g},  b^ = b e^{-g}  and the L x L
matrices  A_ab = stril(a~ b^T), A_ak = stril(a~ k^T), A_rb = tril(r~ b^T), A_rk = tril(r~ k^T):

    SA  = (I - A_ab)^{-1} (a~ h0 + A_ak V)           = W h0 + U        (triangular solve)
    O   = r~ h0 + A_rk V + A_rb SA                    = Q h0 + O_intra
    h_L = diag(e^G) h0 + (k e^{G-g})^T V + (b e^{G-g})^T SA = M h0 + C

The factors e^{-g} grow like exp(0.6065 L) for RWKV-7's decay bound (w >= -0.6065); L = 16..64 is safe
in float32.

Forward (`_forward`, used with and without autograd). With T = (I - A_ab)^{-1} = I + T' and R = A_rb T:

    [W; Q]     = [a~; r~] + [T'; R] a~                    (2L x K per chunk)
    [U; O_in]  = ([A_ak; A_rk] + [T'; R] A_ak) V          (2L x V)
    per chunk, sequentially:  [SA; O] = [U; O_in] + [W; Q] h,   h <- e^G * h + [k_d; b_d]^T [V; SA]

with k_d = k e^{G-g}, b_d = b e^{G-g}: 8 K V flops per step in the state part, L-independent (the naive
recurrence does ~9 K V; the gain is doing them as matmuls). [T - I; R] = [A_ab; A_rb] T, T from one
batched triangular solve with identity right-hand side. Chunks are processed in
blocks of about `_BLOCK_ROWS` rows (over B * H * chunks) so every temporary stays small and is reused
across blocks: on CPU the cost of touching fresh memory and of cache misses otherwise dominates the
matmuls.

Backward (custom autograd.Function; same formulas as the Triton kernel): one reverse scan over chunks for
dh_c = M_c^T dh_{c+1} + Q_c^T dO_c, with M^T dh = e^G * dh + W^T (b_d dh) (M itself, K x K per chunk, is
never formed), then every input gradient in closed form, batched over chunks. The a/r rows and b/k
columns are kept stacked ([a~; r~], [b^; k^], the 2L x 2L matrix of all four A blocks) so each gradient
block pair is one matmul, and the saved (K x V per chunk) states are read once per product: at the
LM-training shapes (300, 60, 1, 64) and (64, 64, 4, 64) that made forward+backward ~25 % faster than
separate matmuls (bench/bench_wkv7.py --lm-shapes). The triangular inverse is ~3 % of that time at one
thread; `unit_lower_inverse` also offers the matmul-only doubling form, measured no faster on CPU.
"""
import math
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from zipformer_rwkv.rwkv7.wkv7.naive import compute_dtype

# |sum of w over one chunk| above which exp(-g) could overflow float32 (e^88 ~ 1.6e38), with margin.
_MAX_CHUNK_LOG_DECAY = 60.0
# default method of `unit_lower_inverse` (see bench/bench_wkv7.py --tri-inv)
_TRI_INV_METHOD = "solve"


def unit_lower_inverse(X: Tensor, negate: bool = False, method: Optional[str] = None) -> Tensor:
    """Inverse of the unit lower-triangular matrices I + N (or I - N with negate=True), batched.

    Args:
      X: (..., L, L); only its strict lower part N is read (diagonal and upper part are ignored).
      negate: invert I - N instead of I + N.
      method: "solve" (one batched `torch.linalg.solve_triangular` with identity right-hand side) or
        "doubling" (N is nilpotent, so (I - N)^{-1} = (I + N)(I + N^2)(I + N^4)... with ceil(log2 L)
        factors: 2 (ceil(log2 L) - 1) batched matmuls); None picks `_TRI_INV_METHOD`.
    Returns:
      (..., L, L) in X's dtype; exactly unit lower-triangular (zero above the diagonal).
    """
    method = method or _TRI_INV_METHOD
    L = X.shape[-1]
    if method == "solve":
        M = X if negate is False else -X
        eye = torch.eye(L, dtype=X.dtype, device=X.device)
        return torch.linalg.solve_triangular(M, eye.expand_as(M), upper=False, unitriangular=True)
    if method != "doubling":
        raise ValueError(f"unit_lower_inverse: unknown method {method!r} (expected 'solve' or 'doubling')")
    P = X.tril(-1)  # P = N: (I - P)^{-1} = sum_j P^j
    if not negate:
        P = P.neg_()  # (I + N)^{-1} = (I - (-N))^{-1}
    T = P.clone()
    T.diagonal(dim1=-2, dim2=-1).add_(1.0)  # I + P
    s = 2
    while s < L:  # T = sum_{j < 2s} P^j after each step
        P = P @ P
        T = T + T @ P
        s *= 2
    return T


def _to_chunks(x: Tensor, n_chunks: int, L: int) -> Tensor:
    """(B, T, H, D) -> (B, H, n_chunks, L, D), zero-padding T up to n_chunks * L."""
    B, T, H, D = x.shape
    pad = n_chunks * L - T
    x = x.transpose(1, 2)
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(B, H, n_chunks, L, D)


class _Terms(NamedTuple):
    """Per-chunk quantities the backward needs, all (B, H, n, ., .) in the compute dtype."""

    w: Tensor  # (L, K) log-decay
    v: Tensor  # (L, V)
    e_g: Tensor  # (L, K) e^{g}
    e_gp: Tensor  # (L, K) e^{g'}
    e_G: Tensor  # (1, K) e^{G}
    ab_t: Tensor  # (2L, K) [a~; r~]
    bk_h: Tensor  # (2L, K) [b^; k^]
    A: Tensor  # (2L, 2L) [[A_ab, A_ak], [A_rb, A_rk]] (causal parts only)
    T_inv: Tensor  # (L, L) (I - A_ab)^{-1}
    W: Tensor  # (L, K)
    U: Tensor  # (L, V)
    Q: Tensor  # (L, K)


_BWD_MASKS: Dict[tuple, Tensor] = {}


def _terms(r, w, k, v, a, b, L: int, cdt: torch.dtype) -> _Terms:
    B, T, H, K = r.shape
    n = math.ceil(T / L)
    r, w, k, a, b, v = (_to_chunks(x.to(cdt), n, L) for x in (r, w, k, a, b, v))

    g = w.cumsum(-2)
    e_g = g.exp()
    e_gp = (g - w).exp_()
    e_G = e_g[..., -1:, :]  # total decay of the chunk
    # [a~; r~] and [b^; k^] written straight into (..., 2L, K) buffers (no stack copies)
    ab_t = r.new_empty(*r.shape[:-2], 2 * L, K)
    bk_h = torch.empty_like(ab_t)
    torch.mul(a, e_gp, out=ab_t[..., :L, :])
    torch.mul(r, e_g, out=ab_t[..., L:, :])
    i_g = e_g.reciprocal()
    torch.mul(b, i_g, out=bk_h[..., :L, :])
    torch.mul(k, i_g, out=bk_h[..., L:, :])
    key = (L, cdt, r.device)
    if key not in _BWD_MASKS:  # strict lower blocks for the a~ rows, lower blocks for the r~ rows
        one = torch.ones(L, L, dtype=cdt, device=r.device)
        _BWD_MASKS[key] = torch.cat([one.tril(-1).repeat(1, 2), one.tril().repeat(1, 2)], 0)
    A = (ab_t @ bk_h.transpose(-1, -2)).mul_(_BWD_MASKS[key])
    T_inv = unit_lower_inverse(A[..., :L, :L], negate=True)
    WU = T_inv @ torch.cat([ab_t[..., :L, :], A[..., :L, L:] @ v], dim=-1)
    W, U = WU[..., :K], WU[..., K:]
    Q = torch.baddbmm(ab_t[..., L:, :].flatten(0, 2), A[..., L:, :L].flatten(0, 2), W.flatten(0, 2)).view_as(W)
    return _Terms(w=w, v=v, e_g=e_g, e_gp=e_gp, e_G=e_G, ab_t=ab_t, bk_h=bk_h, A=A, T_inv=T_inv, W=W, U=U, Q=Q)


def _from_chunks(x: Tensor, T: int) -> Tensor:
    """(B, H, n, L, D) -> (B, T, H, D), dropping padding."""
    B, H, n, L, D = x.shape
    return x.reshape(B, H, n * L, D)[:, :, :T].transpose(1, 2)


# Rows (B * H * chunks * L) per block in `_forward`. 1024 rows (temporaries <= 1 MB at K = 64) measured
# fastest on a 2-core AVX-512 CPU at (1, 1024, 4, 64) and (8, 512, 12, 64); 4096 was 10-40 % slower.
_BLOCK_ROWS = 1024
_MASKS: Dict[tuple, Tensor] = {}
_LOG2E = 1.4426950408889634


def _fwd_mask(L: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(2L, 2L) mask that, applied to [a~; r~] @ [k^; b^]^T = [[A_ak, A_ab], [A_rk, A_rb]], keeps the causal
    parts and negates the A_ab and A_rb columns: the top-right block is then the strict lower part of
    I - A_ab, and those columns times T are -[T - I; A_rb T] (sign flips are exact)."""
    key = (L, dtype, device)
    if key not in _MASKS:
        one = torch.ones(L, L, dtype=dtype, device=device)
        top = torch.cat([one.tril(-1), -one.tril(-1)], 1)
        _MASKS[key] = torch.cat([top, torch.cat([one.tril(), -one.tril()], 1)], 0)
    return _MASKS[key]


def _forward(r, w, k, v, a, b, state: Optional[Tensor], L: int, save_states: bool):
    """Chunked WKV7 forward (see the module docstring), blocked over chunks.

    e^{g} for all chunks first (the cumulative log-decay in base 2 by L - 1 row additions, then exp2:
    both several times cheaper on CPU than cumsum over a middle dimension and exp). Per block of chunks,
    batched: [a~; r~], [k^; b^], the masked A blocks, [T - I; A_rb T] by one right-sided triangular solve,
    [U; O_intra] = ([A_ak; A_rk] + [T'; R] A_ak) V and [W; Q] = [a~; r~] + [T'; R] a~. Then per chunk
    (small ops on per-chunk views taken up front):  [SA; O] = [U; O_intra] + [W; Q] h,  SA copied under
    V,  h <- e^G * h + [k_d; b_d]^T [V; SA]  (k_d^T V inside the scan's matmul: as a separate batched
    matmul with inner size L it ran at a fraction of the speed at the prefill shapes).

    Args: as `wkv7_chunked`; L = chunk length; save_states: also return the state entering each chunk.
    Returns:
      out (B, T, H, V) in r's dtype, final state (B, H, V, K) in the compute dtype, and (if save_states)
      the chunk start states h (B, H, n, K, V) in [key, value] layout, else None.
    """
    B, T, H, K = r.shape
    V = v.shape[-1]
    in_dtype, cdt = r.dtype, compute_dtype(r.dtype)
    if in_dtype != cdt:
        r, w, k, v, a, b = (x.to(cdt) for x in (r, w, k, v, a, b))
    n = math.ceil(T / L)
    if n * L != T:  # pad the last chunk with w = 0 (no decay) and zero vectors: the state is unchanged
        r, w, k, v, a, b = (torch.nn.functional.pad(x, (0, 0, 0, 0, 0, n * L - T)) for x in (r, w, k, v, a, b))
    BH = B * H
    G = max(1, min(n, _BLOCK_ROWS // (BH * L)))  # chunks per block
    mask = _fwd_mask(L, cdt, r.device)
    # E = exp([0; g]) per chunk for all chunks at once, (B, n, L + 1, H, K): rows 0..L-1 = e^{g'}, 1..L = e^{g}
    E = w.new_empty(B, n, L + 1, H, K)
    E[:, :, 0].zero_()
    torch.mul(w.view(B, n, L, H, K), _LOG2E, out=E[:, :, 1:])
    for t in range(2, L + 1):  # cumulative sum, base 2 (cheaper than cumsum over a middle dim)
        E[:, :, t].add_(E[:, :, t - 1])
    E.exp2_()
    new = lambda *shape: r.new_empty(*shape, dtype=cdt)  # noqa: E731
    Nm = G * BH
    # workspace of one block, reused by every block
    X_, Y_, A_, TR_ = new(Nm, 2 * L, K), new(Nm, 2 * L, K), new(Nm, 2 * L, 2 * L), new(Nm, 2 * L, L)
    VS_, P_, WQ_ = new(Nm, 2 * L, V), new(Nm, 2 * L, V), new(Nm, 2 * L, K)
    Hs_ = new(G + 1, BH, K, V)  # chunk start states of a block, and the state after it
    tmp = new(BH, K, V)
    out = r.new_empty(B, n * L, H, V, dtype=in_dtype)
    out5 = out.view(B, n, L, H, V).permute(1, 0, 3, 2, 4)  # (n, B, H, L, V)
    if state is None:
        Hs_[0].zero_()
    else:
        Hs_[0].copy_(state.transpose(-1, -2).reshape(BH, K, V))
    starts = new(BH, n, K, V) if save_states else None
    for c0 in range(0, n, G):
        c1 = min(n, c0 + G)
        Gb, N = c1 - c0, (c1 - c0) * BH

        def blk(x: Tensor) -> Tensor:  # (B, n * L, H, D) -> view (Gb, B, H, L, D) of this block's steps
            return x[:, c0 * L:c1 * L].unflatten(1, (Gb, L)).permute(1, 0, 3, 2, 4)

        def v5(x: Tensor) -> Tensor:  # (N, ...) -> (Gb, B, H, ...)
            return x.view(Gb, B, H, *x.shape[1:])

        X, Y, A, TR, VS, P, WQ = (t[:N] for t in (X_, Y_, A_, TR_, VS_, P_, WQ_))
        Vc = VS[:, :L]  # [V; SA] per chunk: V now, SA in the scan
        Hs = Hs_[:Gb + 1]
        Eb = E[:, c0:c1].permute(1, 0, 3, 2, 4)  # (Gb, B, H, L + 1, K)
        e_gp, e_g, e_G = Eb[..., :L, :], Eb[..., 1:, :], Eb[..., L:, :]
        X5, Y5 = v5(X), v5(Y)
        torch.mul(blk(a), e_gp, out=X5[..., :L, :])  # a~
        torch.mul(blk(r), e_g, out=X5[..., L:, :])  # r~
        torch.div(blk(k), e_g, out=Y5[..., :L, :])  # k^
        torch.div(blk(b), e_g, out=Y5[..., L:, :])  # b^
        v5(Vc).copy_(blk(v))
        torch.bmm(X, Y.transpose(-1, -2), out=A)
        A.mul_(mask)  # [[A_ak, -A_ab], [A_rk, -A_rb]], causal parts only
        Y5.mul_(e_G)  # [k_d; b_d]
        # T = (I - A_ab)^{-1} (only the strict lower part of I - A_ab is read); [T - I; R] = [A_ab; A_rb] T,
        # so TR = [-A_ab; -A_rb] T = -[T'; R] (the identity-right-hand-side solve and a matmul measured ~20 %
        # faster than one right-sided solve with the A columns)
        torch.bmm(A[:, :, L:], unit_lower_inverse(A[:, :L, L:]), out=TR)
        Z = torch.baddbmm(A[:, :, :L], TR, A[:, :L, :L], alpha=-1.0)  # [A_ak; A_rk] + [T'; R] A_ak
        torch.bmm(Z, Vc, out=P)  # [U; O_intra]
        torch.baddbmm(X, TR, X[:, :L], alpha=-1.0, out=WQ)  # [W; Q] = [a~; r~] + [T'; R] a~
        P4, WQ4, VS4 = P.view(Gb, BH, 2 * L, V), WQ.view(Gb, BH, 2 * L, K), VS.view(Gb, BH, 2 * L, V)
        # per-chunk views made up front (one unbind each instead of several indexing ops per step)
        Ps, SAs, WQs, VSs = P4.unbind(0), P4[:, :, :L].unbind(0), WQ4.unbind(0), VS4.unbind(0)
        SAdst = VS4[:, :, L:].unbind(0)
        Yds = Y.view(Gb, BH, 2 * L, K).transpose(-1, -2).unbind(0)  # [k_d; b_d]^T
        eGs = E[:, c0:c1, L].transpose(0, 1).reshape(Gb, BH, K, 1).unbind(0)
        Hl = Hs.unbind(0)
        for c in range(Gb):
            h = Hl[c]
            Ps[c].baddbmm_(WQs[c], h)  # [SA; O] = [U; O_intra] + [W; Q] h
            SAdst[c].copy_(SAs[c])
            torch.mul(h, eGs[c], out=tmp)
            torch.baddbmm(tmp, Yds[c], VSs[c], out=Hl[c + 1])  # e^G h + [k_d; b_d]^T [V; SA]
        out5[c0:c1].copy_(v5(P)[..., L:, :])
        if starts is not None:
            starts[:, c0:c1].copy_(Hs[:Gb].transpose(0, 1))
        Hs_[0].copy_(Hs[Gb])
    final = Hs_[0].view(B, H, K, V).transpose(-1, -2).contiguous()
    if starts is not None:
        starts = starts.view(B, H, n, K, V)
    return out[:, :T], final, starts


class ChunkedWKV7(torch.autograd.Function):
    """Chunked forward; backward by the closed-form chunk gradients (see module docstring)."""

    @staticmethod
    def forward(ctx, r, w, k, v, a, b, state, L: int):
        out, final, h_start = _forward(r, w, k, v, a, b, state, L, save_states=True)
        ctx.save_for_backward(r, w, k, v, a, b, h_start)
        ctx.L, ctx.has_state, ctx.state_dtype = L, state is not None, None if state is None else state.dtype
        return out, final

    @staticmethod
    def backward(ctx, d_out, d_state):
        r, w, k, v, a, b, h0 = ctx.saved_tensors
        cdt = h0.dtype
        B, T, H, K = r.shape
        V = v.shape[-1]
        L = ctx.L
        n = h0.shape[2]
        t = _terms(r, w, k, v, a, b, L, cdt)
        dO = _to_chunks(d_out.to(cdt), n, L) if d_out is not None else torch.zeros_like(t.v)
        dh_T = d_state.to(cdt).transpose(-1, -2) if d_state is not None else h0.new_zeros(B, H, K, V)
        tr = lambda x: x.transpose(-1, -2)  # noqa: E731
        e_G, A = t.e_G, t.A
        bk_d = t.bk_h * e_G  # [b_d; k_d], (B, H, n, 2L, K)
        # reverse scan, dh[c] = dL/d(state after chunk c):
        #   dh[c-1] = M_c^T dh[c] + Q_c^T dO_c,  M^T dh = e^G * dh + W^T (b_d dh)   (M = diag(e^G)(I + b^^T W))
        # [b_d; k_d] dh[c] (needed below for dSA and dv) is kept from the scan
        QdO = tr(t.Q) @ dO  # (B, H, n, K, V)
        dh = h0.new_empty(B, H, n, K, V)
        BKdh = h0.new_empty(B, H, n, 2 * L, V)
        d = dh_T
        for c in range(n - 1, -1, -1):
            dh[:, :, c] = d
            BKdh[:, :, c] = bk_d[:, :, c] @ d
            d = torch.baddbmm(
                torch.addcmul(QdO[:, :, c], d, tr(e_G[:, :, c])).flatten(0, 1), tr(t.W[:, :, c]).flatten(0, 1),
                BKdh[:, :, c, :L].flatten(0, 1),
            ).view(B, H, K, V)
        d_h0 = d

        # every block of two (row) is [a~-rows; r~-rows] or [b-columns; k-columns], as in t.A
        SA = t.W @ h0 + t.U
        dSA = tr(A[..., L:, :L]) @ dO + BKdh[..., :L, :]
        dX = tr(t.T_inv) @ dSA
        dXO = torch.cat([dX, dO], dim=-2)  # (2L, V)
        dv = tr(A[..., L:]) @ dXO + BKdh[..., L:, :]  # A_ak^T dX + A_rk^T dO + k_d dh
        SAv = torch.cat([SA, t.v], dim=-2)  # (2L, V)
        dA = (dXO @ tr(SAv)).mul_(_BWD_MASKS[(L, cdt, r.device)])  # [[dA_ab, dA_ak], [dA_rb, dA_rk]]
        dar = dXO @ tr(h0) + dA @ t.bk_h  # [da~; dr~]
        dbk_h = tr(dA) @ t.ab_t  # [db^; dk^]
        dbk_d = SAv @ tr(dh)  # [db_d; dk_d]
        pd = dbk_d * bk_d
        p = dbk_h * t.bk_h + pd
        q = dar * t.ab_t  # [da~ a~; dr~ r~]
        # log-decay: g = cumsum(w), g' = g - w, G = g_L
        dgp = q[..., :L, :]
        dg = q[..., L:, :] - p[..., :L, :] - p[..., L:, :]
        dG = pd.sum(-2, keepdim=True) + tr((dh * h0).sum(-1, keepdim=True)) * e_G
        rev = lambda x: x.flip(-2).cumsum(-2).flip(-2)  # noqa: E731
        dw = rev(dg + dgp) - dgp + dG
        dbk = (dbk_h + dbk_d * e_G).unflatten(-2, (2, L)) / t.e_g.unsqueeze(-3)  # [db; dk]
        grads = (dar[..., L:, :] * t.e_g, dw, dbk[..., 1, :, :], dv, dar[..., :L, :] * t.e_gp, dbk[..., 0, :, :])
        grads = [_from_chunks(x, T).to(r.dtype) for x in grads]
        d_state0 = tr(d_h0).to(ctx.state_dtype) if ctx.has_state else None
        return (*grads, d_state0, None)


def wkv7_chunked(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Optional[Tensor] = None,
    chunk_size: Optional[int] = 16,
) -> Tuple[Tensor, Tensor]:
    """Chunked WKV7; same contract as `wkv7_naive` (shapes (B, T, H, K), state (B, H, V, K)).

    Computes in float32 (float64 for float64 inputs); returns (out in the input dtype, final state in
    the compute dtype). Padding steps use w = 0 and zero vectors, which leave the state unchanged, so
    any T works. Differentiable once (custom backward; no double backward). When no input requires
    grad (or under torch.no_grad) nothing is saved for backward: the inference/prefill path.
    chunk_size=None picks the fastest measured on CPU for K = 64 (bench/bench_wkv7.py): 16 for the
    no-grad forward, 32 with autograd (fwd+bwd 10-15 % faster than 16).

    Raises:
      ValueError: if chunk_size * min(w) < -60 (exp(-cumsum(w)) would overflow; RWKV-7's
        w = -0.6065 * sigmoid(.) never gets there for chunk_size <= 64).
    """
    B, T, H, K = r.shape
    inputs = (r, w, k, v, a, b, state)
    needs_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs)
    L = int(chunk_size) if chunk_size is not None else (32 if needs_grad else 16)
    if T == 0:
        cdt = compute_dtype(r.dtype)
        s = r.new_zeros(B, H, v.shape[-1], K, dtype=cdt) if state is None else state.to(cdt)
        return r.new_zeros(B, 0, H, v.shape[-1]), s
    w_min = float(w.detach().min())
    if w_min * L < -_MAX_CHUNK_LOG_DECAY:
        raise ValueError(
            f"wkv7_chunked: min(w) = {w_min:.3g} with chunk_size = {L} would overflow exp(-cumsum(w)); "
            "w must be a log-decay >= -0.6065 as RWKV-7 produces, or use a smaller chunk_size"
        )
    if needs_grad:
        return ChunkedWKV7.apply(r, w, k, v, a, b, state, L)
    out, final, _ = _forward(r, w, k, v, a, b, state, L, save_states=False)
    return out, final
