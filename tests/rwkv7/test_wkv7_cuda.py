"""The compiled Triton WKV7 kernel on CUDA (the default there), fwd + bwd vs the float64 reference.

Skipped without CUDA (tests/test_wkv7_triton.py covers the same kernel in Triton's CPU interpreter).
Shapes (B, T, H, K) = (2, T, 2, 64) for T in {1, 15, 17, 100, 4096} (a single step, a short and a
one-step-over chunk of 16, a masked tail, a long sequence), fp32/bf16/fp16, with and without an initial
state; every check is ||got - ref|| / ||ref|| against float64 autograd of `wkv7_naive` on the same
(dtype-rounded) inputs, for out, the final state and the gradients of r, w, k, v, a, b and the state.

Relative-error bounds (TOL): fp32 2e-5 (IEEE fp32 dots; GPU exp and summation order differ from the
reference, over up to 256 chunks); fp16 1e-2 and bf16 2e-2 (outputs and input gradients are rounded to
the 16-bit dtype, 2^-11 and 2^-8 relative, and the kernel's dots run in TF32, 10 mantissa bits). Under the
CPU interpreter (fp32 dots) this comparison gives at most 4e-7 / 3e-4 / 3.4e-3 for fp32 / fp16 / bf16 at
these shapes (T up to 300, 2026-12-06), so each bound leaves room for TF32 and GPU math, not for a bug.

If TRITON_INTERPRET=1 is already in force in this process, the file re-runs itself in a subprocess
without it, so the compiled kernel is what gets tested.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the compiled Triton kernel needs one (interpreter tests: test_wkv7_triton.py)",
                allow_module_level=True)
pytest.importorskip("triton", reason="triton is not installed")

from wkv7_inputs import errors_vs_reference, run_test_file_in_subprocess  # noqa: E402
from zipformer_rwkv.rwkv7.wkv7 import resolve_impl, wkv7  # noqa: E402
from zipformer_rwkv.rwkv7.wkv7.triton_kernel import interpreter_active, wkv7_triton  # noqa: E402

TOL = {torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def _check(errs, tol):
    bad = {name: f"{e:.2e}" for name, e in errs.items() if not e <= tol}
    assert not bad, f"relative errors above {tol:g}: {bad}"


if interpreter_active():

    def test_compiled_kernel_in_subprocess():
        run_test_file_in_subprocess(__file__, {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})

else:

    def test_cuda_default_is_the_compiled_triton_kernel():
        if os.environ.get("ZIPRWKV_WKV7_IMPL", "auto") not in ("", "auto", "triton"):
            pytest.skip("$ZIPRWKV_WKV7_IMPL overrides the default")
        assert resolve_impl("auto", torch.device("cuda")) == "triton"

    @pytest.mark.parametrize("with_state", [False, True])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("T", [1, 15, 17, 100, 4096])
    def test_compiled_matches_reference(T, dtype, with_state):
        errs = errors_vs_reference(wkv7_triton, (2, T, 2, 64), dtype, with_state, seed=200 + T + 7 * with_state,
                                   device="cuda")
        _check(errs, TOL[dtype])

    def test_compiled_whole_head_blocks_via_wkv7():
        """B * H >= 128 programs: one value block per head (the other block width), bf16 as in training,
        through `wkv7`. (fp32 at this width is left out: its backward alone compiles for a minute.)"""
        errs = errors_vs_reference(lambda *x: wkv7(*x, impl="triton"), (4, 40, 32, 64), torch.bfloat16, True,
                                   seed=7, device="cuda")
        _check(errs, TOL[torch.bfloat16])
