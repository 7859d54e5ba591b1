"""Triton WKV7 kernel under Triton's CPU interpreter (TRITON_INTERPRET=1), fwd + bwd vs the float64 reference.

Tolerances (rel. error vs float64 autograd of the naive recurrence on the same input values):
fp32 <= 1e-5, bf16 <= 1e-2. The interpreter runs tl.dot in numpy fp32, so TF32 rounding used for 16-bit
inputs on a real GPU is not exercised here.

Triton decides interpret-vs-compile when it is first imported, for the whole process. This file does
not set TRITON_INTERPRET in the pytest process (that would turn the compiled kernel of every later test,
tests/test_wkv7_cuda.py's included, into the interpreter): unless the interpreter is already active
(TRITON_INTERPRET=1 set by the caller), it re-runs itself in a subprocess with TRITON_INTERPRET=1.
"""
import os

import pytest
import torch

triton = pytest.importorskip("triton")

from wkv7_inputs import errors_vs_reference, make_inputs, rel_err, run_test_file_in_subprocess  # noqa: E402
from zipformer_rwkv.rwkv7.wkv7 import wkv7  # noqa: E402
from zipformer_rwkv.rwkv7.wkv7.triton_kernel import interpreter_active, wkv7_triton  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}

if not interpreter_active():

    def test_triton_kernel_in_subprocess():
        run_test_file_in_subprocess(__file__, dict(os.environ, TRITON_INTERPRET="1"))

else:

    @pytest.mark.parametrize("with_state", [False, True])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    @pytest.mark.parametrize("T", [1, 15, 17, 100])
    def test_triton_matches_naive_fwd_bwd(T, dtype, with_state):
        errs = errors_vs_reference(wkv7_triton, (1, T, 2, 16), dtype, with_state, seed=100 + T + 7 * with_state)
        bad = {name: e for name, e in errs.items() if not e <= TOL[dtype]}
        assert not bad, f"relative errors above {TOL[dtype]:g}: {bad}"

    def test_triton_head_size_64_and_batch():
        errs = errors_vs_reference(lambda *xs: wkv7(*xs, impl="triton"), (2, 21, 1, 64), torch.float32, True, seed=11)
        assert max(errs.values()) <= 1e-5, errs

    def test_triton_state_carry():
        inputs, s0 = make_inputs(1, 40, 2, 16, seed=12)
        xs = [x.float() for x in inputs]
        out, s = wkv7_triton(*xs, s0.float())
        out1, s1 = wkv7_triton(*(x[:, :23] for x in xs), s0.float())
        out2, s2 = wkv7_triton(*(x[:, 23:] for x in xs), s1)
        assert rel_err(torch.cat([out1, out2], 1), out) <= 1e-5 and rel_err(s2, s) <= 1e-5

    def test_triton_rejects_odd_head_size():
        inputs, _ = make_inputs(1, 3, 1, 24, seed=13)
        with pytest.raises(ValueError, match="power of two"):
            wkv7_triton(*(x.float() for x in inputs))
