"""Chunked WKV7 forward on inputs that are not contiguous (B, T, H, K) tensors, ragged T, with and without
autograd (zipformer_rwkv/rwkv7/wkv7/chunked.py `_forward`). fp32 rel. error <= 1e-5 vs the float64 loop."""
import pytest
import torch

from wkv7_inputs import make_inputs, rel_err
from zipformer_rwkv.rwkv7.wkv7 import chunked, wkv7_chunked, wkv7_naive


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("T", [29, 64])
def test_non_contiguous_inputs(T, grad, monkeypatch):
    monkeypatch.setattr(chunked, "_BLOCK_ROWS", 100)  # 2 * 3 * 16 = 96 rows per chunk: one chunk per block
    inputs, s0 = make_inputs(2, T, 3, 16, seed=T)
    ref, s_ref = wkv7_naive(*inputs, s0)
    # stored as (B, H, T, K) and (B, H, K, V), seen through transposes
    xs = [x.float().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(grad) for x in inputs]
    state = s0.float().transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not any(x.is_contiguous() for x in xs) and not state.is_contiguous()
    with torch.set_grad_enabled(grad):
        out, s = wkv7_chunked(*xs, state)
    assert rel_err(out.detach(), ref) <= 1e-5 and rel_err(s.detach(), s_ref) <= 1e-5
