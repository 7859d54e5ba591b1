"""Shared helpers for the WKV7 tests: realistic random inputs, relative errors, and the comparison of
an implementation's forward + backward with the float64 reference."""
import os
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import torch

LOG_DECAY_SCALE = 0.6065306597  # exp(-0.5); RWKV-7's w = -0.6065 * sigmoid(w_raw), as in BlinkDL's RWKV_x070


def make_inputs(B: int, T: int, H: int, K: int, seed: int,
                with_state: bool = True) -> Tuple[List[torch.Tensor], Optional[torch.Tensor]]:
    """Float64 (r, w, k, v, a, b) of shape (B, T, H, K) as RWKV-7 produces them, and a (B, H, K, K) state.

    w = -0.6065 * sigmoid(randn) (log-decay); kk L2-normalised per head; a = -kk, b = kk * sigmoid(randn).
    """
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    r, k, v = randn(B, T, H, K) * 0.5, randn(B, T, H, K) * 0.5, randn(B, T, H, K) * 0.5
    w = -LOG_DECAY_SCALE * torch.sigmoid(randn(B, T, H, K))
    kk = torch.nn.functional.normalize(randn(B, T, H, K), dim=-1)
    a_in = torch.sigmoid(randn(B, T, H, K))
    state = randn(B, H, K, K) * 0.3 if with_state else None
    return [r, w, k, v, -kk, kk * a_in], state


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref||, or ||x|| when ref is exactly zero (e.g. dw at T=1 from a zero state)."""
    x, ref = x.double(), ref.double()
    denom = ref.norm()
    diff = (x - ref).norm()
    return float(diff / denom) if denom > 0 else float(x.norm())


def run_fwd_bwd(fn, inputs: Sequence[torch.Tensor], state: Optional[torch.Tensor], dtype: torch.dtype, seed: int = 123):
    """Run fn(r, w, k, v, a, b, state) on copies cast to `dtype` (state stays fp32/fp64), backprop a fixed
    random cotangent into out and final state; return (out, final_state, grads of r,w,k,v,a,b[,state])."""
    xs = [x.detach().to(dtype).requires_grad_() for x in inputs]
    s_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    s = state.detach().to(s_dtype).requires_grad_() if state is not None else None
    out, final = fn(*xs, s)
    g = torch.Generator().manual_seed(seed)
    d_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device)
    d_final = torch.randn(final.shape, generator=g, dtype=torch.float64).to(final.device)
    loss = (out.double() * d_out).sum() + (final.double() * d_final).sum()
    loss.backward()
    grads = [x.grad for x in xs] + ([s.grad] if s is not None else [])
    return out.detach(), final.detach(), grads


GRAD_NAMES = ["r", "w", "k", "v", "a", "b", "state"]


def errors_vs_reference(fn, shape: Tuple[int, int, int, int], dtype: torch.dtype, with_state: bool, seed: int,
                        device: str = "cpu") -> Dict[str, float]:
    """Relative errors of fn(r, w, k, v, a, b, state) against float64 autograd of `wkv7_naive`.

    Inputs of `shape` (B, T, H, K) from `make_inputs`, rounded to `dtype` first so the reference sees
    exactly the values fn sees; the state stays fp32. Also asserts the output dtypes (out and input
    grads in `dtype`, final state and its grad fp32). Returns {"out", "final state", "dr", ..., "db"
    [, "dstate"]} -> ||got - ref|| / ||ref||.
    """
    from zipformer_rwkv.rwkv7.wkv7 import wkv7_naive

    inputs, s0 = make_inputs(*shape, seed=seed, with_state=with_state)
    inputs = [x.to(dtype).double().to(device) for x in inputs]
    s0 = s0.float().double().to(device) if s0 is not None else None
    ref = run_fwd_bwd(wkv7_naive, inputs, s0, torch.float64)
    got = run_fwd_bwd(fn, inputs, s0, dtype)
    assert got[0].dtype == dtype and got[1].dtype == torch.float32, (got[0].dtype, got[1].dtype)
    errs = {"out": rel_err(got[0], ref[0]), "final state": rel_err(got[1], ref[1])}
    for name, g, g_ref in zip(GRAD_NAMES, got[2], ref[2]):
        assert g.dtype == (torch.float32 if name == "state" else dtype), (name, g.dtype)
        errs["d" + name] = rel_err(g, g_ref)
    return errs


def run_test_file_in_subprocess(path: str, env: Dict[str, str]) -> None:
    """Run pytest on one test file in a fresh Python with environment `env` and assert that it passed
    (Triton picks interpret-vs-compile once per process, from TRITON_INTERPRET)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.abspath(path)],
                          cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
