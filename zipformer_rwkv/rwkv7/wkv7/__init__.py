"""WKV7, the RWKV-7 generalized delta-rule recurrence, with interchangeable implementations.

* `naive.py`   -- step-by-step float64-capable reference (autograd through plain torch ops);
* `chunked.py` -- chunk-parallel PyTorch form, the default on CPU;
* `triton_kernel.py` -- Triton forward + backward (chunked, tl.dot), the default on CUDA; also runs on
  CPU tensors through Triton's interpreter (used by the tests).

`wkv7(...)` picks one; `ZIPRWKV_WKV7_IMPL=naive|chunked|triton` overrides impl="auto".
"""
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

from zipformer_rwkv.rwkv7.wkv7.chunked import wkv7_chunked
from zipformer_rwkv.rwkv7.wkv7.naive import wkv7_naive

__all__ = ["wkv7", "wkv7_naive", "wkv7_chunked", "triton_available", "IMPLS", "ENV_IMPL"]

IMPLS = ("auto", "naive", "chunked", "triton")
ENV_IMPL = "ZIPRWKV_WKV7_IMPL"


def triton_available() -> bool:
    """True if `import triton` works (needed for impl="triton")."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def _check(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Optional[Tensor]) -> None:
    if r.dim() != 4:
        raise ValueError(f"wkv7: r must be (B, T, H, K), got shape {tuple(r.shape)}")
    for name, x in (("w", w), ("k", k), ("a", a), ("b", b)):
        if x.shape != r.shape:
            raise ValueError(f"wkv7: {name} has shape {tuple(x.shape)}, expected r's shape {tuple(r.shape)}")
    if v.dim() != 4 or v.shape[:3] != r.shape[:3]:
        raise ValueError(f"wkv7: v has shape {tuple(v.shape)}, expected (B, T, H, V) matching r {tuple(r.shape)}")
    for name, x in (("w", w), ("k", k), ("v", v), ("a", a), ("b", b)):
        if x.dtype != r.dtype or x.device != r.device:
            raise ValueError(f"wkv7: {name} is {x.dtype} on {x.device}, r is {r.dtype} on {r.device}")
    if not r.dtype.is_floating_point:
        raise ValueError(f"wkv7: inputs must be floating point, got {r.dtype}")
    if state is not None:
        B, _, H, K = r.shape
        want = (B, H, v.shape[-1], K)
        if tuple(state.shape) != want:
            raise ValueError(
                f"wkv7: state has shape {tuple(state.shape)}, expected (B, H, V, K) = {want} "
                "([value, key] layout as in BlinkDL's code)"
            )
        if state.device != r.device:
            raise ValueError(f"wkv7: state is on {state.device}, inputs on {r.device}")


def resolve_impl(impl: str, device: torch.device) -> str:
    """Map impl="auto" (or the env override) to a concrete implementation name."""
    if impl not in IMPLS:
        raise ValueError(f"wkv7: impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = os.environ.get(ENV_IMPL, "auto") or "auto"
        if impl not in IMPLS:
            raise ValueError(f"wkv7: ${ENV_IMPL}={impl!r}; expected one of {IMPLS}")
    if impl == "auto":
        impl = "triton" if device.type == "cuda" and triton_available() else "chunked"
    return impl


def wkv7(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Optional[Tensor] = None,
    *,
    impl: str = "auto",
    chunk_size: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """WKV7 over a sequence (the recurrence in `naive.py` and `rwkv7/README.md`).

    Args:
      r, w, k, v, a, b: (B, T, H, K), one dtype (fp32/bf16/fp16/fp64). w = per-channel LOG-decay
        w = log(d) <= 0, as RWKV-7 computes it: w = -0.6065306597 * sigmoid(w_raw), d in (0.545, 1).
        a = alpha = -kk, b = beta = kk * a_in.
      state: (B, H, K, K) float32 initial state in BlinkDL's [value, key] layout (S[i, j], i = value
        index, j = key index), or None for zeros.
      impl: "auto" (triton on CUDA if importable, else chunked; `$ZIPRWKV_WKV7_IMPL` overrides),
        "naive", "chunked" or "triton" (on CPU tensors triton runs in Triton's interpreter: slow, tests only).
      chunk_size: chunk length of the chunked PyTorch path (the Triton kernel uses 16); None picks
        the fastest measured on CPU (16 for a no-grad forward, 32 with autograd).

    Update: S_t = S_{t-1} (diag(exp(w_t)) + a_t^T b_t) + v_t^T k_t;  out_t = S_t r_t.

    Returns:
      out (B, T, H, K) in the input dtype, final_state (B, H, K, K) float32 (float64 for float64 inputs).
      Differentiable w.r.t. r, w, k, v, a, b and state.

    Raises:
      ValueError: on mismatched shapes/dtypes/devices or an unknown impl.
    """
    _check(r, w, k, v, a, b, state)
    impl = resolve_impl(impl, r.device)
    if impl == "naive":
        return wkv7_naive(r, w, k, v, a, b, state)
    if impl == "chunked":
        return wkv7_chunked(r, w, k, v, a, b, state, chunk_size=chunk_size)
    if not triton_available():
        raise RuntimeError("wkv7: impl='triton' requested but `import triton` fails")
    from zipformer_rwkv.rwkv7.wkv7.triton_kernel import wkv7_triton

    return wkv7_triton(r, w, k, v, a, b, state)
