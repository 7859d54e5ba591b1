"""Building blocks of Zipformer2 (icefall's `zipformer/scaling.py`), in plain torch (no k2).

Everything here is parameter-free or holds ordinary `weight`/`bias` tensors, so state-dict keys
match icefall's. Training-time helpers (`Balancer`, `Whiten`, `ScaleGrad`, `limit_param_value`,
`penalize_abs_values_gt`) leave the forward value unchanged and only modify gradients; at
inference (eval mode, or input without `requires_grad`) they are identities.
"""
import math
import random
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ScheduledFloat(nn.Module):
    """A float that is a piecewise-linear function of the training batch count.

    `ScheduledFloat((0.0, 0.3), (20000.0, 0.1), default=0.0)` is 0.3 at batch 0, 0.1 from batch
    20000 on, linear in between. `float(sf)` returns `default` in eval mode or while
    `batch_count` is None (i.e. before `set_batch_count` was ever called), as in icefall.
    It is an `nn.Module` (without parameters) so that `model.train()/eval()` and
    `set_batch_count(model, n)` reach it through `named_modules()`.
    """

    def __init__(self, *points: Tuple[float, float], default: float = 0.0):
        super().__init__()
        if len(points) == 1 and isinstance(points[0][0], (tuple, list)):
            points = tuple(points[0])
        if not points:
            raise ValueError("ScheduledFloat needs at least one (batch_count, value) point")
        xs = [float(p[0]) for p in points]
        if any(b <= a for a, b in zip(xs, xs[1:])) or xs[0] < 0:
            raise ValueError(f"ScheduledFloat x values must be >= 0 and increasing: {xs}")
        self.schedule = [(float(x), float(y)) for x, y in points]
        self.default = default
        self.batch_count: Optional[float] = None
        self.name: Optional[str] = None

    def extra_repr(self) -> str:
        return f"batch_count={self.batch_count}, schedule={self.schedule}"

    def value_at(self, batch_count: float) -> float:
        """The schedule's value at `batch_count` (ignores training mode and `default`)."""
        pts = self.schedule
        if batch_count <= pts[0][0]:
            return pts[0][1]
        if batch_count >= pts[-1][0]:
            return pts[-1][1]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if x0 <= batch_count <= x1:
                return y0 + (y1 - y0) * (batch_count - x0) / (x1 - x0)
        raise AssertionError("unreachable")

    def __float__(self) -> float:
        if self.batch_count is None or not self.training:
            return float(self.default)
        return self.value_at(float(self.batch_count))


FloatLike = Union[float, ScheduledFloat]


def _whitening_schedule(x: float, ratio: float = 2.0) -> ScheduledFloat:
    """Whitening limit `x` at batch 0 rising to `ratio * x` at batch 20000 (icefall's helper)."""
    return ScheduledFloat((0.0, x), (20000.0, ratio * x), default=x)


def ScaledLinear(*args, initial_scale: float = 1.0, **kwargs) -> nn.Linear:
    """`nn.Linear` whose initial weight is multiplied by `initial_scale` and whose bias is drawn
    from U(-0.1*s, 0.1*s). No extra parameters: keys are plain `weight`/`bias`."""
    ans = nn.Linear(*args, **kwargs)
    with torch.no_grad():
        ans.weight.mul_(initial_scale)
        if ans.bias is not None:
            nn.init.uniform_(ans.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return ans


def ScaledConv2d(*args, initial_scale: float = 1.0, **kwargs) -> nn.Conv2d:
    """`nn.Conv2d` with the same initial scaling as `ScaledLinear`."""
    ans = nn.Conv2d(*args, **kwargs)
    with torch.no_grad():
        ans.weight.mul_(initial_scale)
        if ans.bias is not None:
            nn.init.uniform_(ans.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return ans


def _swoosh_forward(x: Tensor, offset: float, const: float) -> Tensor:
    """log(1 + exp(x - offset)) - 0.08 x - const, computed in place on one fresh tensor (3x
    faster on CPU than the out-of-place chain, same values; softplus threshold 20 as F.softplus)."""
    y = x - offset
    torch.ops.aten.softplus.out(y, 1, 20, out=y)
    return y.add_(x, alpha=-0.08).sub_(const)


class _SwooshFn(torch.autograd.Function):
    """Swoosh with a hand-written backward: saves only z = x - offset (one tensor of x's size,
    like autograd's softplus) and computes d/dx = sigmoid(z) - 0.08 (derivative of the Swoosh
    formula) in the backward pass, so autograd keeps no elementwise temporaries."""

    @staticmethod
    def forward(ctx, x: Tensor, offset: float, const: float) -> Tensor:
        z = x - offset
        ctx.save_for_backward(z)
        y = F.softplus(z)
        return y.add_(x, alpha=-0.08).sub_(const)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (z,) = ctx.saved_tensors
        # softplus_backward(g, z) = g * sigmoid(z) (g where z > 20), exactly what autograd
        # gives for F.softplus; the -0.08 x term adds -0.08 g.
        ans = torch.ops.aten.softplus_backward(grad, z, 1, 20)
        return ans.add_(grad, alpha=-0.08), None, None


def _swoosh(x: Tensor, offset: float, const: float) -> Tensor:
    """log(1 + exp(x - offset)) - 0.08 x - const, any shape; differentiable via `_SwooshFn`."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SwooshFn.apply(x, offset, const)
    return _swoosh_forward(x, offset, const)


def swoosh_l(x: Tensor) -> Tensor:
    """SwooshL(x) = log(1 + exp(x - 4)) - 0.08 x - 0.035 (Zipformer paper, arXiv 2310.11230)."""
    return _swoosh(x, 4.0, 0.035)


def swoosh_r(x: Tensor) -> Tensor:
    """SwooshR(x) = log(1 + exp(x - 1)) - 0.08 x - 0.313261687 (Zipformer paper, arXiv 2310.11230)."""
    return _swoosh(x, 1.0, 0.313261687)


class SwooshL(nn.Module):
    """Module wrapper of `swoosh_l`; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return swoosh_l(x)


class SwooshR(nn.Module):
    """Module wrapper of `swoosh_r`; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return swoosh_r(x)


class _ScaleGradFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.alpha, None


class ScaleGrad(nn.Module):
    """Identity in the forward pass; multiplies the gradient by `alpha` in the backward pass."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and x.requires_grad):
            return x
        return _ScaleGradFn.apply(x, self.alpha)


class _LimitParamValueFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, min_value: float, max_value: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.limits = (min_value, max_value)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.limits
        # Below `lo` the gradient may only push x up; above `hi` only down (sign flips).
        flip = ((grad > 0) & (x < lo)) | ((grad < 0) & (x > hi))
        return torch.where(flip, -grad, grad), None, None


def limit_param_value(x: Tensor, min_value: float, max_value: float, prob: float = 0.6,
                      training: bool = True) -> Tensor:
    """Keeps a parameter (mostly) within [min_value, max_value] by flipping gradient signs that
    would push it further out. Forward value is unchanged; no-op when not training."""
    if training and random.random() < prob:
        return _LimitParamValueFn.apply(x, min_value, max_value)
    return x


class _AbsPenaltyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, limit: float, penalty: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.cfg = (limit, penalty)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        limit, penalty = ctx.cfg
        extra = penalty * x.sign() * (x.abs() > limit).to(grad.dtype)
        return grad + extra, None, None


def penalize_abs_values_gt(x: Tensor, limit: float, penalty: float) -> Tensor:
    """Adds the gradient of the auxiliary loss `penalty * relu(|x| - limit)` (summed) to x's
    gradient; forward value unchanged. Used on attention scores during training."""
    return _AbsPenaltyFn.apply(x, limit, penalty)


class _BalancerFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, cfg: Tuple[float, float, float, float, float, int]) -> Tensor:
        ctx.save_for_backward(x)
        ctx.cfg = cfg
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        min_mean, max_mean, min_rms, max_rms, grad_scale, channel_dim = ctx.cfg
        xf = x.detach().float()
        dims = [d for d in range(xf.ndim) if d != channel_dim]
        count = xf.numel() // xf.shape[channel_dim]
        # The penalty depends on x only through the per-channel mean and mean square, so autograd
        # runs on those small (1, C, 1, ..) tensors and the chain rule through the two means is
        # written out: d/dx = d_mean / count + d_sq_mean * 2 x / count (a few passes over x
        # instead of autograd's many full-size temporaries).
        with torch.enable_grad():
            mean = xf.mean(dim=dims, keepdim=True).requires_grad_(True)
            # (x * x).mean, not linalg.vector_norm: the latter is ~2x slower on channels_last.
            sq_mean = (xf * xf).mean(dim=dims, keepdim=True).requires_grad_(True)
            stddev = (sq_mean - mean * mean).clamp(min=1.0e-20).sqrt()
            rms = sq_mean.clamp(min=1.0e-20).sqrt()
            m = mean / stddev
            m_loss = (m - m.clamp(min=min_mean, max=max_mean)).abs()
            r_loss = (rms.clamp(min=min_rms, max=max_rms) / rms).log().abs()
            d_mean, d_sq_mean = torch.autograd.grad((m_loss + r_loss).sum(), (mean, sq_mean))
        loss_grad = torch.addcmul(d_mean / count, xf, d_sq_mean * (2.0 / count))
        loss_grad_rms = (loss_grad * loss_grad).mean(dim=dims, keepdim=True).sqrt()
        loss_grad_rms = loss_grad_rms.clamp(min=1.0e-20)
        loss_grad.mul_(grad_scale / loss_grad_rms)
        g = grad.float()
        return loss_grad.mul_(g.abs()).add_(g).to(grad.dtype), None


def _abs_to_rms(x: float) -> float:
    # For Gaussian data E|x| = a implies rms = sqrt(pi/2) * a.
    return 1.25331413732 * x


def _proportion_positive_to_mean(p: float) -> float:
    # Proportion of positive values -> mean/stddev of a Gaussian, via a crude inverse erf
    # (1 / (sqrt(pi) ln 2) * atanh), as icefall does.
    z = 2 * p - 1
    eps = 1.0e-10
    return 0.8139535143 * (math.log(1 + z + eps) - math.log(1 - z + eps)) / 2.0


class Balancer(nn.Module):
    """Gradient-only constraint on per-channel statistics (icefall's Balancer).

    With probability `prob` per call (training, input requiring grad) it adds to the gradient a
    term, scaled to `grad_scale` of |grad|, that pushes each channel's proportion of positive
    values into [min_positive, max_positive] and its mean |x| into [min_abs, max_abs].
    Forward value is always the input. Any shape; `channel_dim` names the channel axis.
    """

    def __init__(self, num_channels: int, channel_dim: int, min_positive: FloatLike = 0.05,
                 max_positive: FloatLike = 0.95, min_abs: FloatLike = 0.2,
                 max_abs: FloatLike = 100.0, grad_scale: FloatLike = 0.04,
                 prob: Optional[FloatLike] = None):
        super().__init__()
        self.prob = ScheduledFloat((0.0, 0.5), (8000.0, 0.125), default=0.4) if prob is None else prob
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.min_positive = min_positive
        self.max_positive = max_positive
        self.min_abs = min_abs
        self.max_abs = max_abs
        self.grad_scale = grad_scale

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and x.requires_grad) or random.random() >= float(self.prob):
            return x
        cdim = self.channel_dim % x.ndim
        cfg = (_proportion_positive_to_mean(float(self.min_positive)),
               _proportion_positive_to_mean(float(self.max_positive)),
               _abs_to_rms(float(self.min_abs)), _abs_to_rms(float(self.max_abs)),
               float(self.grad_scale), cdim)
        return _BalancerFn.apply(x, cfg)


def whitening_metric(x: Tensor, num_groups: int) -> Tensor:
    """How far the channel covariance of x (.., C) is from a multiple of identity: >= 1, with 1
    for perfectly "white" features. Returns a scalar tensor (icefall's `_whitening_metric`)."""
    x = x.reshape(-1, x.shape[-1])
    n, c = x.shape
    cpg = c // num_groups
    x = x.reshape(n, num_groups, cpg).transpose(0, 1)
    x = x - x.mean(dim=1, keepdim=True)
    covar = torch.matmul(x.transpose(1, 2), x)
    mean_diag = covar.diagonal(dim1=1, dim2=2).mean()
    covarsq_mean_diag = (covar ** 2).sum() / (num_groups * cpg)
    return covarsq_mean_diag / (mean_diag ** 2 + 1.0e-20)


class _WhitenFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, module: "Whiten") -> Tensor:
        ctx.save_for_backward(x)
        ctx.module = module
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        w = ctx.module
        with torch.enable_grad():
            xf = x.detach().float().requires_grad_(True)
            metric = whitening_metric(xf, w.num_groups)
            if metric < float(w.whitening_limit):
                w.prob = w.min_prob
                return grad, None
            w.prob = w.max_prob
            (penalty_grad,) = torch.autograd.grad(metric, xf)
        scale = float(w.grad_scale) * grad.float().norm() / (penalty_grad.norm() + 1.0e-20)
        return grad + (penalty_grad * scale).to(grad.dtype), None


class Whiten(nn.Module):
    """Gradient-only penalty that keeps the channel covariance of x (.., C) close to white when
    `whitening_metric` exceeds `whitening_limit` (icefall's Whiten). Identity forward.

    Applied with probability `prob`, which moves between `prob[0]` (metric under the limit) and
    `prob[1]` (over the limit).
    """

    def __init__(self, num_groups: int, whitening_limit: FloatLike,
                 prob: Union[float, Tuple[float, float]], grad_scale: FloatLike):
        super().__init__()
        if isinstance(prob, float):
            prob = (prob, prob)
        self.num_groups = num_groups
        self.whitening_limit = whitening_limit
        self.grad_scale = grad_scale
        self.min_prob, self.max_prob = prob
        self.prob = self.max_prob

    def forward(self, x: Tensor) -> Tensor:
        if (not (self.training and x.requires_grad) or random.random() > self.prob
                or float(self.grad_scale) == 0):
            return x
        return _WhitenFn.apply(x, self)


class BiasNorm(nn.Module):
    """y = x * mean((x - bias)^2 over channels)^-0.5 * exp(log_scale) (Zipformer paper; icefall's
    `BiasNorm`).

    `bias` only enters the scale, it is not subtracted from the output. Params `log_scale` ()
    and `bias` (C,). In training the gradient keeps `log_scale` within [-1.5, 1.5].
    Shape: any, channels on `channel_dim` (default last).
    """

    def __init__(self, num_channels: int, channel_dim: int = -1, log_scale: float = 1.0,
                 log_scale_min: FloatLike = -1.5, log_scale_max: FloatLike = 1.5):
        super().__init__()
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.log_scale = nn.Parameter(torch.tensor(log_scale))
        self.bias = nn.Parameter(torch.empty(num_channels).normal_(mean=0, std=1e-4))
        self.log_scale_min = log_scale_min
        self.log_scale_max = log_scale_max

    def forward(self, x: Tensor) -> Tensor:
        cdim = self.channel_dim % x.ndim
        bias = self.bias.reshape([-1] + [1] * (x.ndim - 1 - cdim))
        log_scale = limit_param_value(self.log_scale, float(self.log_scale_min),
                                      float(self.log_scale_max), training=self.training)
        scales = torch.mean((x - bias) ** 2, dim=cdim, keepdim=True).rsqrt() * log_scale.exp()
        return x * scales


class Dropout2(nn.Module):
    """Ordinary dropout whose rate may be a ScheduledFloat."""

    def __init__(self, p: FloatLike):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, p=float(self.p), training=self.training)


class Dropout3(nn.Module):
    """Dropout whose mask is shared along `shared_dim` (e.g. the same channels dropped for all
    frames of a sequence). Rate may be a ScheduledFloat; identity in eval."""

    def __init__(self, p: FloatLike, shared_dim: int):
        super().__init__()
        self.p = p
        self.shared_dim = shared_dim

    def forward(self, x: Tensor) -> Tensor:
        p = float(self.p)
        if not self.training or p == 0.0:
            return x
        shape = list(x.shape)
        shape[self.shared_dim] = 1
        mask = (torch.rand(shape, device=x.device) > p).to(x.dtype)
        return x * (mask / (1.0 - p))


class ActivationDropoutAndLinear(nn.Module):
    """SwooshL/SwooshR, then dropout (mask shared along `dropout_shared_dim`), then a linear map.

    Holds `weight` (out, in) and `bias` (out,) directly, as icefall does, so keys are
    `...out_proj.weight/bias`. Input (..., in) -> output (..., out).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True,
                 activation: str = "SwooshL", dropout_p: FloatLike = 0.0,
                 dropout_shared_dim: Optional[int] = -1, initial_scale: float = 1.0):
        super().__init__()
        lin = ScaledLinear(in_channels, out_channels, bias=bias, initial_scale=initial_scale)
        self.weight = lin.weight
        self.register_parameter("bias", lin.bias)
        if activation not in ("SwooshL", "SwooshR"):
            raise ValueError(f"activation must be SwooshL or SwooshR, got {activation!r}")
        self.activation = swoosh_l if activation == "SwooshL" else swoosh_r
        self.dropout_p = dropout_p
        self.dropout_shared_dim = dropout_shared_dim

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation(x)
        p = float(self.dropout_p)
        if self.training and p != 0.0:
            shape = list(x.shape)
            if self.dropout_shared_dim is not None:
                shape[self.dropout_shared_dim] = 1
            mask = (torch.rand(shape, device=x.device) > p).to(x.dtype)
            x = x * (mask / (1.0 - p))
        return F.linear(x, self.weight, self.bias)


def convert_num_channels(x: Tensor, num_channels: int) -> Tensor:
    """Truncate or zero-pad the last dim of x to `num_channels`."""
    if num_channels <= x.shape[-1]:
        return x[..., :num_channels]
    pad = torch.zeros(*x.shape[:-1], num_channels - x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.cat((x, pad), dim=-1)
