"""Zipformer building blocks against their formulas (float64) and the gradient-only modules."""
import math

import pytest
import torch

from zipformer_rwkv.zipformer.attention import CompactRelPositionalEncoding, _rel_to_abs
from zipformer_rwkv.zipformer.modules import ChunkCausalDepthwiseConv1d, SimpleDownsample
from zipformer_rwkv.zipformer.scaling import (
    Balancer,
    BiasNorm,
    ScheduledFloat,
    Whiten,
    _abs_to_rms,
    _proportion_positive_to_mean,
    swoosh_l,
    swoosh_r,
    whitening_metric,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_swoosh_formulas():
    x = torch.linspace(-30, 30, 601, dtype=torch.float64)
    ref_l = torch.log1p(torch.exp(x - 4)) - 0.08 * x - 0.035
    ref_r = torch.log1p(torch.exp(x - 1)) - 0.08 * x - 0.313261687
    for xi in (x, x.clone().requires_grad_(True)):  # in-place no-grad path and autograd path
        assert torch.allclose(swoosh_l(xi), ref_l, rtol=0, atol=1e-8)
        assert torch.allclose(swoosh_r(xi), ref_r, rtol=0, atol=1e-8)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(swoosh_l(xg).sum(), xg)
    assert torch.allclose(g, torch.sigmoid(x - 4) - 0.08, atol=1e-12)
    assert abs(float(swoosh_r(torch.zeros(1)))) < 1e-6  # SwooshR(0) = 0 by design


def test_bias_norm_formula():
    norm = BiasNorm(8).double()
    with torch.no_grad():
        norm.bias.normal_()
        norm.log_scale.fill_(0.3)
    x = torch.randn(5, 3, 8, dtype=torch.float64)
    ref = x * ((x - norm.bias) ** 2).mean(-1, keepdim=True) ** -0.5 * math.exp(0.3)
    assert torch.allclose(norm(x), ref, rtol=1e-12)


def test_scheduled_float():
    sf = ScheduledFloat((0.0, 0.3), (20000.0, 0.1), default=0.0)
    assert float(sf) == 0.0  # batch_count None -> default
    sf.batch_count = 10000
    assert float(sf) == pytest.approx(0.2)
    sf.eval()
    assert float(sf) == 0.0  # eval -> default
    sf.train()
    sf.batch_count = 1e9
    assert float(sf) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        ScheduledFloat((10.0, 1.0), (5.0, 2.0))


def test_rel_to_abs_matches_explicit_indexing():
    h, n, t, left = 2, 3, 5, 4
    t_key = t + left
    pos = torch.randn(h, n, t, t + t_key - 1, dtype=torch.float64)
    out = _rel_to_abs(pos, t, t_key)
    for i in range(t):
        for j in range(t_key):
            assert torch.equal(out[:, :, i, j], pos[:, :, i, t - 1 - i + j])


def test_positional_encoding_rows_are_offsets():
    enc = CompactRelPositionalEncoding(16, dropout_rate=0.0)
    a = enc(torch.zeros(5, 1, 16))  # offsets -4..4
    b = enc(torch.zeros(3, 1, 16), left_context_len=2)  # offsets -4..2
    assert a.shape == (1, 9, 16) and b.shape == (1, 7, 16)
    assert torch.allclose(a[0, :7], b[0])
    c = 16 ** 0.5
    x = torch.arange(-4.0, 5.0, dtype=torch.float64)
    xa = torch.atan(c * x.sign() * (torch.log(x.abs() + c) - math.log(c)) / (16 / (2 * math.pi)))
    assert torch.allclose(a[0, :, 2].double(), torch.cos(2 * xa), atol=1e-6)
    assert torch.allclose(a[0, :, 3].double(), torch.sin(2 * xa), atol=1e-6)
    assert torch.all(a[0, :, -1] == 1.0)
    with torch.inference_mode():  # regrown inside inference mode (e.g. a validation pass) ...
        long = enc(torch.zeros(1500, 1, 16))  # ... past its initial 1000 frames
    assert long.shape == (1, 2999, 16)
    lin = torch.nn.Linear(16, 2)  # ... the cached table still works in a training step
    lin(enc(torch.zeros(1200, 1, 16))).sum().backward()
    assert enc(torch.zeros(5, 1, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert torch.equal(enc(torch.zeros(5, 1, 16)), a)  # no precision lost by the bf16 call


def naive_chunk_causal_conv(conv: ChunkCausalDepthwiseConv1d, x: torch.Tensor, chunk: int):
    """Float64 reference: causal conv over the whole sequence + per-chunk centred conv."""
    k = conv.kernel_size
    causal = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (k // 2, 0)),
                                        conv.causal_conv.weight.double(), conv.causal_conv.bias.double(),
                                        groups=x.shape[1])
    pieces = []
    scale = conv.chunkwise_conv_scale.double().detach()
    for s in range(0, x.shape[2], chunk):
        seg = x[..., s: s + chunk]
        pad = chunk - seg.shape[2]
        y = torch.nn.functional.conv1d(torch.nn.functional.pad(seg, (0, pad)), conv.chunkwise_conv.weight.double(),
                                       conv.chunkwise_conv.bias.double(), padding=k // 2, groups=x.shape[1])
        sc = torch.ones(x.shape[1], chunk, dtype=x.dtype)
        for p in range(chunk):
            if p < k:  # distance from the chunk's left edge
                sc[:, p] += scale[0, :, p]
            if chunk - 1 - p < k:  # distance from the right edge
                sc[:, p] += scale[1, :, k - chunk + p]
        pieces.append((y * sc)[..., : seg.shape[2]])
    return torch.cat(pieces, dim=-1) + causal


@pytest.mark.parametrize("chunk", [3, 8, 20])
def test_chunk_causal_conv_against_reference(chunk):
    torch.manual_seed(0)
    conv = ChunkCausalDepthwiseConv1d(6, 7)
    with torch.no_grad():
        conv.chunkwise_conv_scale.normal_(0, 0.3)
    x = torch.randn(2, 6, 37, dtype=torch.float64, requires_grad=True)
    out = conv.double()(x, chunk_size=chunk)
    ref = naive_chunk_causal_conv(conv, x, chunk)
    assert float((out - ref).detach().norm() / ref.detach().norm()) < 1e-12
    g = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)
    assert float((gx - gr).norm() / gr.norm()) < 1e-12


def test_simple_downsample_with_lengths_equals_alone():
    ds = SimpleDownsample(4, 4)
    with torch.no_grad():
        ds.bias.normal_()
    a = torch.randn(7, 1, 4)
    batch = torch.cat([torch.cat([a, torch.full((6, 1, 4), 9.0)]), torch.randn(13, 1, 4)], dim=1)
    out = ds(batch, torch.tensor([7, 13]))
    assert torch.allclose(out[:2, 0], ds(a)[:, 0])


def test_balancer_changes_only_gradients():
    torch.manual_seed(0)
    bal = Balancer(4, channel_dim=-1, min_positive=0.4, max_positive=0.6, min_abs=0.5, max_abs=1.0,
                   prob=1.0).train()
    x = (torch.randn(100, 4) + torch.tensor([0.0, 3.0, -3.0, 0.0])) * torch.tensor([1, 1, 1, 10.0])
    x.requires_grad_(True)
    y = bal(x)
    assert torch.equal(y, x)
    g = torch.ones_like(x) * 0.1
    (gx,) = torch.autograd.grad(y, x, g)
    diff = (gx - g).abs().mean(0)
    assert diff[1] > 0 and diff[2] > 0 and diff[3] > 0  # violating channels are pushed
    # channel 1 is too positive: extra gradient is positive (descent lowers its mean)
    assert (gx[:, 1] - g[:, 1]).mean() > 0 and (gx[:, 2] - g[:, 2]).mean() < 0
    bal.eval()
    assert bal(x) is x  # identity, no autograd node in eval


def test_whiten_penalises_correlated_features_only():
    w = Whiten(num_groups=1, whitening_limit=2.0, prob=1.0, grad_scale=0.1).train()
    white = torch.randn(400, 8, dtype=torch.float64)
    corr = white[:, :1].repeat(1, 8) + 0.01 * white
    assert float(whitening_metric(white, 1)) < 2.0 < float(whitening_metric(corr, 1))
    for x, changed in ((white, False), (corr, True)):
        x = x.clone().requires_grad_(True)
        g = torch.randn_like(x)
        (gx,) = torch.autograd.grad(w(x), x, g)
        assert (not torch.equal(gx, g)) == changed


@pytest.mark.parametrize("fn,offset,const", [(swoosh_l, 4.0, 0.035), (swoosh_r, 1.0, 0.313261687)])
def test_swoosh_autograd_matches_plain_formula(fn, offset, const):
    """The custom autograd Function (in-place forward, backward from the saved input) against
    autograd through the plain formula: gradcheck in float64, then fwd/bwd in float32 on odd
    shapes including the softplus threshold region (x - offset > 20)."""
    x = (torch.randn(7, 13, dtype=torch.float64) * 4).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-8)
    torch.manual_seed(1)
    x = torch.randn(5, 37, 11) * 10
    x[0, 0, :3] = torch.tensor([offset + 19.9, offset + 20.0, offset + 25.0])
    g = torch.randn_like(x)
    outs, grads = [], []
    for f in (fn, lambda t: torch.nn.functional.softplus(t - offset) - 0.08 * t - const):
        xi = x.clone().requires_grad_(True)
        y = f(xi)
        y.backward(g)
        outs.append(y.detach())
        grads.append(xi.grad)
    for a, b in ((outs[0], outs[1]), (grads[0], grads[1])):
        assert float((a - b).norm() / b.norm()) < 1e-6
    x64 = x.double().requires_grad_(True)
    ref = torch.log1p(torch.exp(x64 - offset)) - 0.08 * x64 - const
    ref.backward(g.double())
    assert float((grads[0].double() - x64.grad).norm() / x64.grad.norm()) < 1e-6


def _balancer_grad_reference(x, grad, min_mean, max_mean, min_rms, max_rms, grad_scale, cdim):
    """The Balancer gradient written the direct way: autograd through the full-size penalty."""
    xf = x.detach().clone().requires_grad_(True)
    dims = [d for d in range(x.ndim) if d != cdim]
    sq_mean = (xf ** 2).mean(dim=dims, keepdim=True)
    mean = xf.mean(dim=dims, keepdim=True)
    stddev = (sq_mean - mean * mean).clamp(min=1.0e-20).sqrt()
    rms = sq_mean.clamp(min=1.0e-20).sqrt()
    m = mean / stddev
    loss = ((m - m.clamp(min=min_mean, max=max_mean)).abs()
            + (rms.clamp(min=min_rms, max=max_rms) / rms).log().abs())
    (lg,) = torch.autograd.grad(loss.sum(), xf)
    lg = lg * (grad_scale / (lg ** 2).mean(dim=dims, keepdim=True).sqrt().clamp(min=1.0e-20))
    return grad + grad.abs() * lg


@pytest.mark.parametrize("shape,cdim", [((37, 3, 6), -1), ((3, 6, 13, 5), 1)])
def test_balancer_backward_matches_direct_autograd(shape, cdim):
    """Balancer's analytic backward (autograd on per-channel stats only) equals autograd through
    the full penalty (float64 reference), for float64 and float32 input (also channels_last),
    within 1e-6 relative."""
    torch.manual_seed(3)
    c = shape[cdim]
    bal = Balancer(c, channel_dim=cdim, min_positive=0.4, max_positive=0.6, min_abs=0.5,
                   max_abs=1.0, prob=1.0).train()
    cfg_shape = [1] * len(shape)
    cfg_shape[cdim] = c
    offs = torch.linspace(-3, 3, c).reshape(cfg_shape)
    scale = torch.linspace(0.1, 5, c).reshape(cfg_shape)
    for dtype in (torch.float64, torch.float32):
        x = (torch.randn(shape) * scale + offs).to(dtype)
        if x.ndim == 4 and dtype == torch.float32:
            x = x.contiguous(memory_format=torch.channels_last)
        g = torch.randn(shape, dtype=dtype)
        xr = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(bal(xr), xr, g)
        mn, mx = (float(v) for v in (bal.min_positive, bal.max_positive))
        ref = _balancer_grad_reference(
            x.double(), g.double(), _proportion_positive_to_mean(mn),
            _proportion_positive_to_mean(mx), _abs_to_rms(0.5), _abs_to_rms(1.0), 0.04,
            cdim % len(shape))
        assert not torch.allclose(ref, g.double())  # the penalty is active
        # the penalty is computed in float32 for every input dtype (as icefall), hence 1e-6
        assert float((gx.double() - ref).norm() / ref.norm()) < 1e-6


@pytest.mark.parametrize("channels,kernel,frames,batch", [(16, 31, 57, 3), (12, 15, 8, 2), (4, 31, 1, 1)])
def test_depthwise_conv1d_channels_last_matches_conv1d_float64(channels, kernel, frames, batch):
    """The channels-last (k, 1) Conv2d path gives nn.Conv1d's output and gradients (input,
    weight, bias), on a time-first input permuted to (N, C, T) as ConvolutionModule does."""
    from zipformer_rwkv.zipformer.modules import depthwise_conv1d_channels_last

    torch.manual_seed(frames)
    conv = torch.nn.Conv1d(channels, channels, kernel, groups=channels, padding=kernel // 2).double()
    x = torch.randn(frames, batch, channels, dtype=torch.float64, requires_grad=True)
    ref = conv(x.permute(1, 2, 0))
    out = depthwise_conv1d_channels_last(x.permute(1, 2, 0), conv)
    assert out.shape == ref.shape
    assert (out - ref).norm() / ref.norm() < 1e-12
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ref, [x, conv.weight, conv.bias], g),
                    torch.autograd.grad(out, [x, conv.weight, conv.bias], g)):
        assert (a - b).norm() / a.norm() < 1e-12
