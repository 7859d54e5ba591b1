"""WKV7 reference and chunked PyTorch path (zipformer_rwkv/rwkv7/README.md).
Tolerances: fp32 rel. error <= 1e-5 vs float64."""
import pytest
import torch

from wkv7_inputs import make_inputs, rel_err, run_fwd_bwd
from zipformer_rwkv.rwkv7.wkv7 import ENV_IMPL, chunked, resolve_impl, wkv7, wkv7_chunked, wkv7_naive

FP32_TOL = 1e-5
NAMES = ["r", "w", "k", "v", "a", "b", "state"]


def scalar_loop(r, w, k, v, a, b, state):
    """Spec 1.3 written out element by element (pure Python floats): independent of the tensor code."""
    B, T, H, K = r.shape
    out = torch.zeros(B, T, H, K, dtype=torch.float64)
    S = state.clone()
    for bb in range(B):
        for h in range(H):
            for t in range(T):
                d = [float(torch.exp(w[bb, t, h, j])) for j in range(K)]
                sa = [sum(float(S[bb, h, i, j]) * float(a[bb, t, h, j]) for j in range(K)) for i in range(K)]
                for i in range(K):
                    for j in range(K):
                        S[bb, h, i, j] = (float(S[bb, h, i, j]) * d[j] + sa[i] * float(b[bb, t, h, j])
                                          + float(v[bb, t, h, i]) * float(k[bb, t, h, j]))
                for i in range(K):
                    out[bb, t, h, i] = sum(float(S[bb, h, i, j]) * float(r[bb, t, h, j]) for j in range(K))
    return out, S


def rwkv_pip_form(r, w, k, v, a, b, state):
    """The `rwkv` package's RWKV_x070_TMix_one matrix form: S = S*d + S @ (alpha^T beta) + v^T k; y = S @ r."""
    B, T, H, K = r.shape
    S = state.clone()
    outs = []
    for t in range(T):
        ab = a[:, t].unsqueeze(-1) @ b[:, t].unsqueeze(-2)  # (B, H, K, K)
        vk = v[:, t].unsqueeze(-1) @ k[:, t].unsqueeze(-2)
        S = S * w[:, t].exp().unsqueeze(-2) + S @ ab + vk
        outs.append((S @ r[:, t].unsqueeze(-1)).squeeze(-1))
    return torch.stack(outs, 1), S


def test_naive_matches_spec_loops():
    (r, w, k, v, a, b), s0 = make_inputs(2, 6, 2, 3, seed=1)
    out, S = wkv7_naive(r, w, k, v, a, b, s0)
    for ref_out, ref_S in (scalar_loop(r, w, k, v, a, b, s0), rwkv_pip_form(r, w, k, v, a, b, s0)):
        assert rel_err(out, ref_out) < 1e-12
        assert rel_err(S, ref_S) < 1e-12
    assert out.dtype == torch.float64 and S.dtype == torch.float64


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("T", [1, 15, 17, 100])
def test_chunked_matches_naive_fwd_bwd(T, with_state):
    inputs, s0 = make_inputs(2, T, 2, 32, seed=T + 7 * with_state, with_state=with_state)
    ref = run_fwd_bwd(wkv7_naive, inputs, s0, torch.float64)
    got = run_fwd_bwd(wkv7_chunked, inputs, s0, torch.float32)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    assert rel_err(got[0], ref[0]) <= FP32_TOL, "out"
    assert rel_err(got[1], ref[1]) <= FP32_TOL, "final state"
    for name, g, g_ref in zip(NAMES, got[2], ref[2]):
        assert rel_err(g, g_ref) <= FP32_TOL, f"d{name}"


@pytest.mark.parametrize("block_rows", [64, 200, None])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("T", [1, 15, 17, 100])
def test_chunked_no_grad_forward(T, with_state, block_rows, monkeypatch):
    """The inference path (no autograd graph) over one or many blocks of chunks, partial last chunk."""
    if block_rows is not None:  # 2 * 3 * 16 = 96 rows per chunk: 64 -> one chunk per block, 200 -> two
        monkeypatch.setattr(chunked, "_BLOCK_ROWS", block_rows)
    inputs, s0 = make_inputs(2, T, 3, 32, seed=T + 3 * with_state, with_state=with_state)
    out_ref, s_ref = wkv7_naive(*inputs, s0)
    xs = [x.float() for x in inputs]
    s32 = None if s0 is None else s0.float()
    with torch.no_grad():
        out, s = wkv7_chunked(*xs, s32)
        out64, s64 = wkv7_chunked(*inputs, s0)
    assert out.dtype == torch.float32 and s.dtype == torch.float32 and out.shape == out_ref.shape
    assert rel_err(out, out_ref) <= FP32_TOL and rel_err(s, s_ref) <= FP32_TOL
    assert rel_err(out64, out_ref) <= 1e-12 and rel_err(s64, s_ref) <= 1e-12
    # the autograd path runs the same forward
    out_g, s_g = wkv7_chunked(*(x.requires_grad_() for x in xs), s32)
    assert torch.equal(out_g.detach(), out) and torch.equal(s_g.detach(), s)


@pytest.mark.parametrize("chunk_size", [8, 32, 64, None])
def test_chunked_other_chunk_sizes(chunk_size):
    inputs, s0 = make_inputs(1, 77, 2, 16, seed=chunk_size or 5)
    out_ref, s_ref = wkv7_naive(*inputs, s0)
    out, s = wkv7_chunked(*(x.float() for x in inputs), s0.float(), chunk_size=chunk_size)
    assert rel_err(out, out_ref) <= FP32_TOL and rel_err(s, s_ref) <= FP32_TOL
    if chunk_size is None:  # the autograd path picks its own chunk size
        got = run_fwd_bwd(lambda *x: wkv7_chunked(*x, chunk_size=None), inputs, s0, torch.float32)
        ref = run_fwd_bwd(wkv7_naive, inputs, s0, torch.float64)
        for g, g_ref in zip(got[2], ref[2]):
            assert rel_err(g, g_ref) <= FP32_TOL


@pytest.mark.parametrize("fn", [wkv7_naive, wkv7_chunked])
def test_state_carry(fn):
    inputs, s0 = make_inputs(2, 50, 2, 16, seed=3)
    xs = [x.float() for x in inputs]
    out, s = fn(*xs, s0.float())
    out1, s1 = fn(*(x[:, :19] for x in xs), s0.float())
    out2, s2 = fn(*(x[:, 19:] for x in xs), s1)
    assert rel_err(torch.cat([out1, out2], 1), out) <= FP32_TOL
    assert rel_err(s2, s) <= FP32_TOL


def test_dispatch_and_dtypes(monkeypatch):
    inputs, s0 = make_inputs(1, 9, 2, 16, seed=5)
    xs = [x.bfloat16() for x in inputs]
    out, s = wkv7(*xs, s0.float())
    assert out.dtype == torch.bfloat16 and s.dtype == torch.float32 and s.shape == (1, 2, 16, 16)
    ref, _ = wkv7_naive(*(x.double() for x in xs), s0)
    assert rel_err(out, ref) < 1e-2
    assert resolve_impl("auto", torch.device("cpu")) == "chunked"
    monkeypatch.setenv(ENV_IMPL, "naive")
    assert resolve_impl("auto", torch.device("cpu")) == "naive"
    assert resolve_impl("chunked", torch.device("cpu")) == "chunked"  # explicit impl wins over env
    monkeypatch.setenv(ENV_IMPL, "bogus")
    with pytest.raises(ValueError, match=ENV_IMPL):
        resolve_impl("auto", torch.device("cpu"))


def test_bad_inputs_raise():
    inputs, s0 = make_inputs(1, 4, 2, 16, seed=6)
    r, w, k, v, a, b = inputs
    with pytest.raises(ValueError, match="impl"):
        wkv7(r, w, k, v, a, b, impl="cuda")
    with pytest.raises(ValueError, match="w has shape"):
        wkv7(r, w[:, :3], k, v, a, b)
    with pytest.raises(ValueError, match="state has shape"):
        wkv7(r, w, k, v, a, b, s0[:, :1])
    with pytest.raises(ValueError, match="is torch.float32"):
        wkv7(r, w.float(), k, v, a, b)
    with pytest.raises(ValueError, match="overflow"):
        wkv7_chunked(r, w * 100, k, v, a, b, chunk_size=16)


def test_empty_sequence_keeps_state():
    inputs, s0 = make_inputs(1, 0, 1, 16, seed=8)
    out, s = wkv7(*(x.float() for x in inputs), s0.float())
    assert out.shape == (1, 0, 1, 16) and torch.equal(s, s0.float())


@pytest.mark.parametrize("method", ["solve", "doubling"])
@pytest.mark.parametrize("L", [1, 5, 16, 32])
@pytest.mark.parametrize("negate", [False, True])
def test_unit_lower_inverse(method, L, negate):
    """(I +- N)^{-1} from the strict lower part only, vs a float64 inverse; fp32 rel. error <= 1e-5."""
    g = torch.Generator().manual_seed(L)
    X = torch.randn(3, 2, L, L, generator=g, dtype=torch.float64) * 0.3  # diagonal and upper part must be ignored
    N = X.tril(-1)
    eye = torch.eye(L, dtype=torch.float64)
    ref = torch.linalg.inv(eye - N if negate else eye + N)
    got = chunked.unit_lower_inverse(X.float(), negate=negate, method=method)
    assert got.dtype == torch.float32 and got.shape == X.shape
    assert rel_err(got, ref) <= FP32_TOL
    assert torch.equal(got.triu(1), torch.zeros_like(got))
    assert torch.equal(got.diagonal(dim1=-2, dim2=-1), torch.ones(3, 2, L))
    with pytest.raises(ValueError, match="unknown method"):
        chunked.unit_lower_inverse(X, method="lu")


@pytest.mark.parametrize("method", ["solve", "doubling"])
def test_chunked_fwd_bwd_each_tri_inv(method, monkeypatch):
    """Both inverse methods give the float64 reference's output, final state and gradients (odd T, 2 chunks+)."""
    monkeypatch.setattr(chunked, "_TRI_INV_METHOD", method)
    inputs, s0 = make_inputs(3, 45, 2, 16, seed=11)
    got = run_fwd_bwd(lambda *x: wkv7_chunked(*x, chunk_size=16), inputs, s0, torch.float32)
    ref = run_fwd_bwd(wkv7_naive, inputs, s0, torch.float64)
    for x, x_ref in zip(got[:2], ref[:2]):
        assert rel_err(x, x_ref) <= FP32_TOL
    for name, g, g_ref in zip(NAMES, got[2], ref[2]):
        assert rel_err(g, g_ref) <= FP32_TOL, name
