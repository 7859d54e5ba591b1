"""Zipformer2 feed-forward, convolution, bypass and resampling modules (icefall's
`zipformer/zipformer.py`; Zipformer paper, arXiv 2310.11230). Time-first layout: (T, N, C)."""
import copy
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from zipformer_rwkv.zipformer.scaling import (
    ActivationDropoutAndLinear,
    Balancer,
    FloatLike,
    ScheduledFloat,
    Whiten,
    _whitening_schedule,
    limit_param_value,
)


class FeedforwardModule(nn.Module):
    """in_proj D -> F, SwooshL, dropout (shared over time), out_proj F -> D. (T, N, D) -> same."""

    def __init__(self, embed_dim: int, feedforward_dim: int, dropout: FloatLike):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, feedforward_dim)
        self.hidden_balancer = Balancer(feedforward_dim, channel_dim=-1, min_positive=0.3,
                                        max_positive=1.0, min_abs=0.75, max_abs=5.0)
        self.out_proj = ActivationDropoutAndLinear(feedforward_dim, embed_dim,
                                                   activation="SwooshL", dropout_p=dropout,
                                                   dropout_shared_dim=0, bias=True,
                                                   initial_scale=0.1)
        self.out_whiten = Whiten(num_groups=1, whitening_limit=_whitening_schedule(7.5),
                                 prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_whiten(self.out_proj(self.hidden_balancer(self.in_proj(x))))


class ChunkCausalDepthwiseConv1d(nn.Module):
    """Depthwise conv for streaming models: a causal conv (kernel (k+1)//2, unlimited left
    context) plus a within-chunk conv (kernel k, zero-padded at chunk edges) whose output is
    scaled by 1 + learned edge corrections `chunkwise_conv_scale` (2, C, k).
    Input/output (N, C, T)."""

    def __init__(self, channels: int, kernel_size: int, initial_scale: float = 1.0,
                 bias: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        self.causal_conv = nn.Conv1d(channels, channels, (kernel_size + 1) // 2, groups=channels,
                                     padding=0, bias=True)
        self.chunkwise_conv = nn.Conv1d(channels, channels, kernel_size, groups=channels,
                                        padding=kernel_size // 2, bias=bias)
        self.chunkwise_conv_scale = nn.Parameter(torch.zeros(2, channels, kernel_size))
        with torch.no_grad():
            self.causal_conv.weight.mul_(initial_scale)
            self.chunkwise_conv.weight.mul_(initial_scale)
            if bias:
                nn.init.uniform_(self.causal_conv.bias, -0.1 * initial_scale, 0.1 * initial_scale)

    def _chunk_scale(self, chunk_size: int) -> Tensor:
        """(C, chunk_size): 1 + left-edge correction + right-edge correction."""
        left, right = self.chunkwise_conv_scale[0], self.chunkwise_conv_scale[1]
        if chunk_size < self.kernel_size:
            left, right = left[:, :chunk_size], right[:, -chunk_size:]
        else:
            pad = left.new_zeros(left.shape[0], chunk_size - self.kernel_size)
            left, right = torch.cat((left, pad), dim=-1), torch.cat((pad, right), dim=-1)
        return 1.0 + (left + right)

    def forward(self, x: Tensor, chunk_size: int = -1) -> Tensor:
        """x: (N, C, T); chunk_size in frames (-1: whole sequence is one chunk)."""
        n, c, t = x.shape
        left_pad = self.kernel_size // 2
        if chunk_size < 0 or chunk_size > t:
            chunk_size = t
        right_pad = -t % chunk_size
        x = nn.functional.pad(x, (left_pad, right_pad))
        x_causal = self.causal_conv(x[..., : left_pad + t])
        num_chunks = (t + right_pad) // chunk_size
        xc = x[..., left_pad:].reshape(n, c, num_chunks, chunk_size).permute(0, 2, 1, 3)
        xc = self.chunkwise_conv(xc.reshape(n * num_chunks, c, chunk_size))
        xc = xc * self._chunk_scale(chunk_size)
        xc = xc.reshape(n, num_chunks, c, chunk_size).permute(0, 2, 1, 3)
        return xc.reshape(n, c, num_chunks * chunk_size)[..., :t] + x_causal

    def streaming_forward(self, x: Tensor, cache: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (N, C, chunk); cache: (N, C, k // 2) previous inputs. Returns (N, C, chunk), cache."""
        left_pad = self.kernel_size // 2
        x = torch.cat([cache, x], dim=2)
        new_cache = x[..., -left_pad:]
        x_causal = self.causal_conv(x)
        xc = self.chunkwise_conv(x[..., left_pad:]) * self._chunk_scale(x.shape[2] - left_pad)
        return xc + x_causal, new_cache


def depthwise_conv1d_channels_last(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """`conv(x)` for a depthwise, stride-1 nn.Conv1d, run as a (k, 1) Conv2d on x viewed as
    (N, C, T, 1) in channels-last memory, i.e. (N, T, C) in memory, C innermost.

    Same weights, same values (fp32 rounding aside); on CPU oneDNN's channels-last depthwise
    kernel was 2-7x faster than Conv1d's for the Zipformer's shapes (forward + backward, 2 threads,
    a one-off timing loop); the whole training step: `bench/bench_train.py --baseline` (RESULTS.md).

    x: (N, C, T); returns (N, C, T'), a channels-last view ((N, T', C) in memory)."""
    w = conv.weight.unsqueeze(-1)  # (C, 1, k, 1)
    xi = x.unsqueeze(-1).contiguous(memory_format=torch.channels_last)
    return F.conv2d(xi, w, conv.bias, padding=(conv.padding[0], 0), groups=conv.groups).squeeze(-1)


class ConvolutionModule(nn.Module):
    """in_proj D -> 2D, x * sigmoid(s), zero padded frames, depthwise conv (chunk-causal when
    `causal`), SwooshR, out_proj D -> D. (T, N, D) -> (T, N, D)."""

    def __init__(self, channels: int, kernel_size: int, causal: bool):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"cnn_module_kernel must be odd, got {kernel_size}")
        self.causal = causal
        self.in_proj = nn.Linear(channels, 2 * channels)
        self.balancer1 = Balancer(channels, channel_dim=-1,
                                  min_positive=ScheduledFloat((0.0, 0.05), (8000.0, 0.025)),
                                  max_positive=1.0, min_abs=1.5,
                                  max_abs=ScheduledFloat((0.0, 5.0), (8000.0, 10.0), default=1.0))
        if causal:
            self.depthwise_conv = ChunkCausalDepthwiseConv1d(channels, kernel_size)
        else:
            self.depthwise_conv = nn.Conv1d(channels, channels, kernel_size, groups=channels,
                                            padding=kernel_size // 2)
        self.balancer2 = Balancer(channels, channel_dim=1,
                                  min_positive=ScheduledFloat((0.0, 0.1), (8000.0, 0.05)),
                                  max_positive=1.0,
                                  min_abs=ScheduledFloat((0.0, 0.2), (20000.0, 0.5)), max_abs=10.0)
        self.whiten = Whiten(num_groups=1, whitening_limit=_whitening_schedule(7.5),
                             prob=(0.025, 0.25), grad_scale=0.01)
        self.out_proj = ActivationDropoutAndLinear(channels, channels, activation="SwooshR",
                                                   dropout_p=0.0, initial_scale=0.05)

    def _glu(self, x: Tensor, src_key_padding_mask: Optional[Tensor]) -> Tensor:
        x, s = self.in_proj(x).chunk(2, dim=-1)
        x = x * torch.sigmoid(self.balancer1(s))
        x = x.permute(1, 2, 0)  # (N, C, T)
        if src_key_padding_mask is not None:
            x = x.masked_fill(src_key_padding_mask.unsqueeze(1), 0.0)
        return x

    def forward(self, x: Tensor, src_key_padding_mask: Optional[Tensor] = None,
                chunk_size: int = -1) -> Tensor:
        """x: (T, N, D); src_key_padding_mask: (N, T) True = pad; chunk_size: frames (-1 full)."""
        x = self._glu(x, src_key_padding_mask)
        if chunk_size >= 0:
            if not self.causal:
                raise ValueError("chunk_size >= 0 needs a model built with causal=True")
            x = self.depthwise_conv(x, chunk_size=chunk_size)
        elif self.causal:
            x = self.depthwise_conv(x)
        else:
            x = depthwise_conv1d_channels_last(x, self.depthwise_conv)
        x = self.balancer2(x).permute(2, 0, 1)
        return self.out_proj(self.whiten(x))

    def streaming_forward(self, x: Tensor, cache: Tensor,
                          src_key_padding_mask: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (T, N, D) chunk; cache (N, D, k // 2); mask (N, T)."""
        x = self._glu(x, src_key_padding_mask)
        x, cache = self.depthwise_conv.streaming_forward(x, cache)
        return self.out_proj(x.permute(2, 0, 1)), cache


class BypassModule(nn.Module):
    """out = src_orig + (src - src_orig) * bypass_scale, `bypass_scale` (C,) learned.

    In training, with probability `skip_rate` per sequence the module is bypassed (scale 0), with
    `straight_through_rate` it is fully used (scale 1); the gradient keeps the scale within
    [scale_min, scale_max]."""

    def __init__(self, embed_dim: int, skip_rate: FloatLike = 0.0,
                 straight_through_rate: FloatLike = 0.0,
                 scale_min: FloatLike = ScheduledFloat((0.0, 0.9), (20000.0, 0.2), default=0),
                 scale_max: FloatLike = 1.0):
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.skip_rate = copy.deepcopy(skip_rate)
        self.straight_through_rate = copy.deepcopy(straight_through_rate)
        self.scale_min = copy.deepcopy(scale_min)
        self.scale_max = copy.deepcopy(scale_max)

    def _get_bypass_scale(self, batch_size: int) -> Tensor:
        if not self.training:
            return self.bypass_scale
        ans = limit_param_value(self.bypass_scale, float(self.scale_min), float(self.scale_max))
        skip_rate = float(self.skip_rate)
        if skip_rate != 0.0:
            ans = ans * (torch.rand(batch_size, 1, device=ans.device) > skip_rate)
        st_rate = float(self.straight_through_rate)
        if st_rate != 0.0:
            st = torch.rand(batch_size, 1, device=ans.device) < st_rate
            ans = torch.maximum(ans, st.to(ans.dtype))
        return ans

    def forward(self, src_orig: Tensor, src: Tensor) -> Tensor:
        """src_orig, src: (T, N, C)."""
        return src_orig + (src - src_orig) * self._get_bypass_scale(src.shape[1])


class SimpleDownsample(nn.Module):
    """(T, N, C) -> (ceil(T / ds), N, C): softmax(bias)-weighted sum of each group of ds frames.

    The input is right-padded to a multiple of ds by repeating the last frame. When `lengths`
    (N,) is given, frames past each sequence's end are replaced by its last real frame first, so
    a padded batch gives each sequence exactly its stand-alone output (icefall instead mixes
    padding into the last group; identical for unpadded input)."""

    def __init__(self, channels: int, downsample: int, dropout: FloatLike = 0.0,
                 causal: bool = False):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(downsample))
        self.downsample = downsample
        self.causal = causal

    def forward(self, src: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        t, n, c = src.shape
        ds = self.downsample
        d_len = (t + ds - 1) // ds
        pad = d_len * ds - t
        if pad:
            src = torch.cat((src, src[-1:].expand(pad, n, c)), dim=0)
        if lengths is not None and bool((lengths < t).any()):
            last = src[(lengths - 1).clamp(min=0), torch.arange(n, device=src.device)]  # (N, C)
            beyond = torch.arange(src.shape[0], device=src.device)[:, None] >= lengths[None, :]
            src = torch.where(beyond.unsqueeze(-1), last.unsqueeze(0), src)
        weights = self.bias.softmax(dim=0).reshape(1, ds, 1, 1)
        return (src.reshape(d_len, ds, n, c) * weights).sum(dim=1)


class SimpleUpsample(nn.Module):
    """(T, N, C) -> (T * upsample, N, C) by repeating each frame (no parameters)."""

    def __init__(self, num_channels: int, upsample: int):
        super().__init__()
        self.upsample = upsample

    def forward(self, src: Tensor) -> Tensor:
        t, n, c = src.shape
        return src.unsqueeze(1).expand(t, self.upsample, n, c).reshape(t * self.upsample, n, c)
