"""Triton WKV7: chunked forward and backward (tl.dot within 16-step chunks, sequential over chunks).

Same algebra as `chunked.py` (read its docstring for the derivation); state h = S^T (key x value) lives
in fp32 registers, split over value blocks of BV columns (columns of h evolve independently), one
program per (value block, batch*head). The forward saves every chunk's start state (B, H, NC, K, V) fp32
for the backward, which walks the chunks in reverse carrying dh = dL/dh and recomputes the intra-chunk
matrices. Key-side gradients are summed over value blocks on the host.

(I - A_ab)^{-1} for the nilpotent strictly-lower A (A^16 = 0) is (I + A)(I + A^2)(I + A^4)(I + A^8):
log2(16) = 4 tensor-core products instead of a 16-step substitution.

Supports any T (masked tail chunk = identity steps), K and V powers of two >= 16, fp32/bf16/fp16 inputs
(fp32 internally; dots in IEEE fp32 for fp32 inputs, TF32 for 16-bit inputs), initial state in, final
state out, gradients for every input including the initial state. Requires w >= -5 (16 steps of
decay must not overflow exp(-cumsum(w)) in fp32); RWKV-7's w >= -0.6065.
On CPU tensors it runs under Triton's interpreter (tests only): TRITON_INTERPRET=1 must be set before
triton is first imported, because Triton picks interpret-vs-compile when `@triton.jit` decorates.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

BT = 16  # chunk length
NUM_WARPS = 4  # warps per program of both kernels (bench_wkv7.py --triton-num-warps times others)
LOG2_BT_MINUS_1 = tl.constexpr(3)  # (I - A)^{-1} product has log2(BT) factors


@triton.jit
def _chunk_prep(r, w, k, a, b, BT: tl.constexpr, PREC: tl.constexpr):
    """Rescaled rows and intra-chunk matrices of one chunk (see chunked.py)."""
    o_t = tl.arange(0, BT)
    strict = o_t[:, None] > o_t[None, :]
    incl = o_t[:, None] >= o_t[None, :]
    g = tl.cumsum(w, axis=0)
    g_last = tl.sum(w, axis=0)
    eg = tl.exp(g)
    egp = tl.exp(g - w)
    ieg = tl.exp(-g)
    to_end = tl.exp(g_last[None, :] - g)
    r_t = r * eg
    a_t = a * egp
    k_h = k * ieg
    b_h = b * ieg
    k_d = k * to_end
    b_d = b * to_end
    A_ab = tl.where(strict, tl.dot(a_t, tl.trans(b_h), input_precision=PREC), 0.0)
    A_ak = tl.where(strict, tl.dot(a_t, tl.trans(k_h), input_precision=PREC), 0.0)
    A_rb = tl.where(incl, tl.dot(r_t, tl.trans(b_h), input_precision=PREC), 0.0)
    A_rk = tl.where(incl, tl.dot(r_t, tl.trans(k_h), input_precision=PREC), 0.0)
    # (I - A_ab)^{-1} = prod_j (I + A^(2^j)), j < log2(BT)
    Tinv = tl.where(o_t[:, None] == o_t[None, :], 1.0, 0.0) + A_ab
    P = A_ab
    for _ in tl.static_range(LOG2_BT_MINUS_1):
        P = tl.dot(P, P, input_precision=PREC)
        Tinv = Tinv + tl.dot(Tinv, P, input_precision=PREC)
    return g, g_last, eg, egp, ieg, to_end, r_t, a_t, k_h, b_h, k_d, b_d, A_ab, A_ak, A_rb, A_rk, Tinv


@triton.jit
def _wkv7_fwd_kernel(
    r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, h0_ptr, o_ptr, hT_ptr, hs_ptr,
    T, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr,
    HAS_H0: tl.constexpr, SAVE_STATES: tl.constexpr, PREC: tl.constexpr,
):
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    NC = (T + BT - 1) // BT
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, K)
    o_v = i_v * BV + tl.arange(0, BV)
    # h0 is (B, H, V, K) [value, key]; we hold its transpose (K, BV)
    s_off = i_bh * V * K + o_v[None, :] * K + o_k[:, None]
    if HAS_H0:
        h = tl.load(h0_ptr + s_off).to(tl.float32)
    else:
        h = tl.zeros([K, BV], dtype=tl.float32)
    for c in range(0, NC):
        t = c * BT + o_t
        m_t = t < T
        row = (i_b * T + t) * H + i_h
        pk = row[:, None] * K + o_k[None, :]
        pv = row[:, None] * V + o_v[None, :]
        r = tl.load(r_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        w = tl.load(w_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        k = tl.load(k_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        a = tl.load(a_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        b = tl.load(b_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        v = tl.load(v_ptr + pv, mask=m_t[:, None], other=0.0).to(tl.float32)
        if SAVE_STATES:
            tl.store(hs_ptr + (i_bh * NC + c) * K * V + o_k[:, None] * V + o_v[None, :], h)
        g, g_last, eg, egp, ieg, to_end, r_t, a_t, k_h, b_h, k_d, b_d, A_ab, A_ak, A_rb, A_rk, Tinv = \
            _chunk_prep(r, w, k, a, b, BT, PREC)
        X = tl.dot(a_t, h, input_precision=PREC) + tl.dot(A_ak, v, input_precision=PREC)
        SA = tl.dot(Tinv, X, input_precision=PREC)
        o = (tl.dot(r_t, h, input_precision=PREC) + tl.dot(A_rk, v, input_precision=PREC)
             + tl.dot(A_rb, SA, input_precision=PREC))
        tl.store(o_ptr + pv, o.to(o_ptr.dtype.element_ty), mask=m_t[:, None])
        h = (tl.exp(g_last)[:, None] * h + tl.dot(tl.trans(k_d), v, input_precision=PREC)
             + tl.dot(tl.trans(b_d), SA, input_precision=PREC))
    tl.store(hT_ptr + s_off, h)


@triton.jit
def _wkv7_bwd_kernel(
    r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, hs_ptr, do_ptr, dhT_ptr,
    dr_ptr, dw_ptr, dk_ptr, da_ptr, db_ptr, dv_ptr, dh0_ptr,
    T, B, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, BT: tl.constexpr,
    HAS_DHT: tl.constexpr, PREC: tl.constexpr,
):
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    NC = (T + BT - 1) // BT
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, K)
    o_v = i_v * BV + tl.arange(0, BV)
    s_off = i_bh * V * K + o_v[None, :] * K + o_k[:, None]
    if HAS_DHT:
        dh = tl.load(dhT_ptr + s_off).to(tl.float32)
    else:
        dh = tl.zeros([K, BV], dtype=tl.float32)
    part = i_v.to(tl.int64) * B * T * H  # row offset of this value block's partial key-side grads
    for cc in range(0, NC):
        c = NC - 1 - cc
        t = c * BT + o_t
        m_t = t < T
        row = (i_b * T + t) * H + i_h
        pk = row[:, None] * K + o_k[None, :]
        pv = row[:, None] * V + o_v[None, :]
        r = tl.load(r_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        w = tl.load(w_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        k = tl.load(k_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        a = tl.load(a_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        b = tl.load(b_ptr + pk, mask=m_t[:, None], other=0.0).to(tl.float32)
        v = tl.load(v_ptr + pv, mask=m_t[:, None], other=0.0).to(tl.float32)
        do = tl.load(do_ptr + pv, mask=m_t[:, None], other=0.0).to(tl.float32)
        h0 = tl.load(hs_ptr + (i_bh * NC + c) * K * V + o_k[:, None] * V + o_v[None, :])
        g, g_last, eg, egp, ieg, to_end, r_t, a_t, k_h, b_h, k_d, b_d, A_ab, A_ak, A_rb, A_rk, Tinv = \
            _chunk_prep(r, w, k, a, b, BT, PREC)
        o_t2 = tl.arange(0, BT)
        strict = o_t2[:, None] > o_t2[None, :]
        incl = o_t2[:, None] >= o_t2[None, :]
        X = tl.dot(a_t, h0, input_precision=PREC) + tl.dot(A_ak, v, input_precision=PREC)
        SA = tl.dot(Tinv, X, input_precision=PREC)
        # through O = r~ h0 + A_rk v + A_rb SA and h_L = e^G h0 + k_d^T v + b_d^T SA
        dSA = tl.dot(tl.trans(A_rb), do, input_precision=PREC) + tl.dot(b_d, dh, input_precision=PREC)
        dX = tl.dot(tl.trans(Tinv), dSA, input_precision=PREC)
        dA_ab = tl.where(strict, tl.dot(dX, tl.trans(SA), input_precision=PREC), 0.0)
        dA_ak = tl.where(strict, tl.dot(dX, tl.trans(v), input_precision=PREC), 0.0)
        dA_rk = tl.where(incl, tl.dot(do, tl.trans(v), input_precision=PREC), 0.0)
        dA_rb = tl.where(incl, tl.dot(do, tl.trans(SA), input_precision=PREC), 0.0)
        dv = (tl.dot(tl.trans(A_rk), do, input_precision=PREC) + tl.dot(k_d, dh, input_precision=PREC)
              + tl.dot(tl.trans(A_ak), dX, input_precision=PREC))
        dr_t = (tl.dot(do, tl.trans(h0), input_precision=PREC) + tl.dot(dA_rk, k_h, input_precision=PREC)
                + tl.dot(dA_rb, b_h, input_precision=PREC))
        da_t = (tl.dot(dX, tl.trans(h0), input_precision=PREC) + tl.dot(dA_ak, k_h, input_precision=PREC)
                + tl.dot(dA_ab, b_h, input_precision=PREC))
        dk_h = (tl.dot(tl.trans(dA_rk), r_t, input_precision=PREC)
                + tl.dot(tl.trans(dA_ak), a_t, input_precision=PREC))
        db_h = (tl.dot(tl.trans(dA_rb), r_t, input_precision=PREC)
                + tl.dot(tl.trans(dA_ab), a_t, input_precision=PREC))
        dk_d = tl.dot(v, tl.trans(dh), input_precision=PREC)
        db_d = tl.dot(SA, tl.trans(dh), input_precision=PREC)
        # log-decay: g = cumsum(w), g' = g - w, G = sum(w)
        dg = dr_t * r_t - dk_h * k_h - db_h * b_h - dk_d * k_d - db_d * b_d
        dgp = da_t * a_t
        dG = tl.sum(dk_d * k_d + db_d * b_d, axis=0) + tl.sum(dh * h0, axis=1) * tl.exp(g_last)
        dw = (tl.sum(dg, axis=0)[None, :] - tl.cumsum(dg, axis=0) + dg
              + tl.sum(dgp, axis=0)[None, :] - tl.cumsum(dgp, axis=0) + dG[None, :])
        pp = (part + row[:, None]) * K + o_k[None, :]
        tl.store(dr_ptr + pp, dr_t * eg, mask=m_t[:, None])
        tl.store(da_ptr + pp, da_t * egp, mask=m_t[:, None])
        tl.store(dk_ptr + pp, dk_h * ieg + dk_d * to_end, mask=m_t[:, None])
        tl.store(db_ptr + pp, db_h * ieg + db_d * to_end, mask=m_t[:, None])
        tl.store(dw_ptr + pp, dw, mask=m_t[:, None])
        tl.store(dv_ptr + pv, dv.to(dv_ptr.dtype.element_ty), mask=m_t[:, None])
        dh = (tl.exp(g_last)[:, None] * dh + tl.dot(tl.trans(r_t), do, input_precision=PREC)
              + tl.dot(tl.trans(a_t), dX, input_precision=PREC))
    tl.store(dh0_ptr + s_off, dh)


def interpreter_active() -> bool:
    """True if this module's kernels and triton.language's own jit helpers run in Triton's interpreter."""
    return type(_wkv7_fwd_kernel).__name__ == "InterpretedFunction" and type(tl.sum).__name__ == "InterpretedFunction"


def _kernel(name: str, device: torch.device):
    """Kernel `name`; CPU tensors need the interpreter (TRITON_INTERPRET=1 before triton's first import)."""
    if device.type == "cpu" and not interpreter_active():
        raise RuntimeError(
            "wkv7 triton on CPU tensors runs only under Triton's interpreter: set TRITON_INTERPRET=1 before "
            "anything imports triton (peft does), or use impl='chunked' on CPU"
        )
    return globals()[name]


def _check_sizes(K: int, V: int) -> None:
    for name, n in (("K", K), ("V", V)):
        if n < 16 or n & (n - 1):
            raise ValueError(f"wkv7 triton: head size {name}={n} must be a power of two >= 16; use impl='chunked'")


def _block_v(V: int, n_bh: int) -> int:
    """Value-block width: whole head when there are enough (batch, head) programs, else split."""
    return V if n_bh >= 128 or V <= 32 else 32


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


class WKV7Triton(torch.autograd.Function):
    """autograd wrapper: forward saves inputs and per-chunk start states, backward runs the reverse scan."""

    @staticmethod
    def forward(ctx, r, w, k, v, a, b, state):
        B, T, H, K = r.shape
        V = v.shape[-1]
        _check_sizes(K, V)
        r, w, k, v, a, b = (x.contiguous() for x in (r, w, k, v, a, b))
        has_h0 = state is not None
        h0 = state.to(torch.float32).contiguous() if has_h0 else r.new_empty(1, dtype=torch.float32)
        NC = triton.cdiv(T, BT)
        BV = _block_v(V, B * H)
        save = any(ctx.needs_input_grad)
        out = torch.empty_like(v)
        hT = r.new_empty(B, H, V, K, dtype=torch.float32)
        hs = r.new_empty(B, H, NC, K, V, dtype=torch.float32) if save else r.new_empty(1, dtype=torch.float32)
        prec = _precision(r.dtype)
        if T > 0:
            _kernel("_wkv7_fwd_kernel", r.device)[(V // BV, B * H)](
                r, w, k, v, a, b, h0, out, hT, hs, T, H=H, K=K, V=V, BV=BV, BT=BT,
                HAS_H0=has_h0, SAVE_STATES=save, PREC=prec, num_warps=NUM_WARPS,
            )
        else:
            hT = h0.clone() if has_h0 else hT.zero_()
        if save:
            ctx.save_for_backward(r, w, k, v, a, b, hs)
        ctx.has_h0 = has_h0
        return out, hT

    @staticmethod
    def backward(ctx, d_out, d_hT):
        r, w, k, v, a, b, hs = ctx.saved_tensors
        B, T, H, K = r.shape
        V = v.shape[-1]
        BV = _block_v(V, B * H)
        NV = V // BV
        has_dht = d_hT is not None
        d_hT = d_hT.to(torch.float32).contiguous() if has_dht else r.new_empty(1, dtype=torch.float32)
        if d_out is None:
            d_out = torch.zeros_like(v)
        d_out = d_out.contiguous()
        parts = [r.new_zeros(NV, B, T, H, K, dtype=torch.float32) for _ in range(5)]
        dv = torch.zeros_like(v, dtype=torch.float32)
        dh0 = r.new_empty(B, H, V, K, dtype=torch.float32)
        if T > 0:
            _kernel("_wkv7_bwd_kernel", r.device)[(NV, B * H)](
                r, w, k, v, a, b, hs, d_out, d_hT, *parts, dv, dh0, T, B, H=H, K=K, V=V, BV=BV, BT=BT,
                HAS_DHT=has_dht, PREC=_precision(r.dtype), num_warps=NUM_WARPS,
            )
        else:
            dh0 = d_hT.clone() if has_dht else dh0.zero_()
        dr, dw, dk, da, db = (p.sum(0).to(r.dtype) for p in parts)
        return dr, dw, dk, dv.to(v.dtype), da, db, (dh0 if ctx.has_h0 else None)


def wkv7_triton(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Optional[Tensor] = None
) -> Tuple[Tensor, Tensor]:
    """Triton WKV7; contract of `wkv7` (shapes (B, T, H, K), state (B, H, V, K) fp32 [value, key]).

    Returns (out (B, T, H, V) in the input dtype, final_state (B, H, V, K) float32).
    Raises ValueError if K or V is not a power of two >= 16.
    """
    return WKV7Triton.apply(r, w, k, v, a, b, state)
