"""Convolutional front end of Zipformer2: `Conv2dSubsampling` (= `encoder_embed`), 100 Hz -> 50 Hz.

Same layers as icefall's `zipformer/subsampling.py`. State-dict keys: `conv.{0,4,7}.*`, `convnext.*`,
`out.*`, `out_norm.*`.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zipformer_rwkv.zipformer.scaling import (
    Balancer,
    BiasNorm,
    Dropout3,
    FloatLike,
    ScaledConv2d,
    ScaleGrad,
    ScheduledFloat,
    SwooshL,
    SwooshR,
    Whiten,
)


class ConvNeXt(nn.Module):
    """Residual ConvNeXt block on (N, C, T, F): depthwise 7x7 -> 1x1 (C->3C) -> SwooshL ->
    1x1 (3C->C) -> + input. In training the residual branch is dropped per sequence with
    probability `layerdrop_rate`."""

    def __init__(self, channels: int, hidden_ratio: int = 3, kernel_size: Tuple[int, int] = (7, 7),
                 layerdrop_rate: Optional[FloatLike] = None):
        super().__init__()
        self.padding = ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)
        hidden = channels * hidden_ratio
        self.layerdrop_rate = (ScheduledFloat((0.0, 0.2), (20000.0, 0.015))
                               if layerdrop_rate is None else layerdrop_rate)
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size, groups=channels,
                                        padding=self.padding)
        self.pointwise_conv1 = nn.Conv2d(channels, hidden, kernel_size=1)
        # The branch runs channels-last, (N, T, F, C): the hidden channels are the last axis.
        self.hidden_balancer = Balancer(hidden, channel_dim=-1, min_positive=0.3, max_positive=1.0,
                                        min_abs=0.75, max_abs=5.0)
        self.activation = SwooshL()
        self.pointwise_conv2 = ScaledConv2d(hidden, channels, kernel_size=1, initial_scale=0.01)
        self.out_balancer = Balancer(channels, channel_dim=1, min_positive=0.4, max_positive=0.6,
                                     min_abs=1.0, max_abs=6.0)
        self.out_whiten = Whiten(num_groups=1, whitening_limit=5.0, prob=(0.025, 0.25),
                                 grad_scale=0.01)

    def _branch(self, x: Tensor) -> Tensor:
        """x: (N, C, T, F), the depthwise-conv output -> (N, C, T, F) (a channels-last view).

        The two 1x1 convolutions are computed as matmuls over the channels-last layout
        (N, T, F, C) with the Conv2d weights viewed as (C_out, C_in): the same values and the
        same state dict. On CPU, Conv2d's 1x1 at 1 thread takes torch's im2col path; the whole
        encoder_embed fwd+bwd on (12, 800, 80) is 3-5% faster this way (A/B in one process,
        1 and 2 threads)."""
        h = x.permute(0, 2, 3, 1)  # (N, T, F, C); free when x is channels_last
        w1, w2 = self.pointwise_conv1.weight, self.pointwise_conv2.weight
        h = F.linear(h, w1.view(w1.shape[0], w1.shape[1]), self.pointwise_conv1.bias)
        h = self.hidden_balancer(h)
        h = self.activation(h)
        h = F.linear(h, w2.view(w2.shape[0], w2.shape[1]), self.pointwise_conv2.bias)
        return h.permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, T, F) -> (N, C, T, F)."""
        # channels_last: torch's CPU depthwise-conv backward is 2x faster (measured, 7x7 on
        # (31, 128, 188, 19)) and at least as fast on GPU; the values are the same. Its output
        # is then (N, T, F, C) in memory, the layout the 1x1 matmuls of `_branch` want.
        y = self._branch(self.depthwise_conv(x.contiguous(memory_format=torch.channels_last)))
        if self.training:
            rate = float(self.layerdrop_rate)
            if rate != 0.0:
                keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) > rate
                y = y * keep.to(y.dtype)
        x = self.out_balancer(x + y)
        if self.training and x.requires_grad:
            x = self.out_whiten(x.transpose(1, 3)).transpose(1, 3)
        return x

    def streaming_forward(self, x: Tensor, cached_left_pad: Tensor) -> Tuple[Tensor, Tensor]:
        """Causal-in-time version: x (N, C, T + 3, F) whose last 3 frames are right context;
        cached_left_pad (N, C, 3, F) are the 3 frames before x. Returns (N, C, T, F) and the new
        cache."""
        pad_t, pad_f = self.padding
        t = x.shape[2] - pad_t
        bypass = x[:, :, :t]
        x = torch.cat([cached_left_pad, x], dim=2)
        new_cache = x[:, :, t:t + pad_t]
        conv = self.depthwise_conv
        x = F.conv2d(x, conv.weight, conv.bias, padding=(0, pad_f), groups=conv.groups)
        return bypass + self._branch(x), new_cache


class Conv2dSubsampling(nn.Module):
    """fbank (N, T, 80) at 100 Hz -> (N, (T - 7) // 2, out_channels) at 50 Hz.

    conv stack (Conv2d 1->8 k3 pad (0,1), SwooshR, Conv2d 8->32 k3 s2, SwooshR, Conv2d 32->C k3
    s(1,2), SwooshR), ConvNeXt(C), flatten C x 19 freq bins, Linear -> `out_channels`, BiasNorm,
    Dropout3; C = `layer3_channels` (128 in icefall). Parameter-free modules keep their indices
    in `conv` so that the keys are `conv.0/4/7` like icefall.
    """

    def __init__(self, in_channels: int, out_channels: int, layer1_channels: int = 8,
                 layer2_channels: int = 32, layer3_channels: int = 128,
                 dropout: FloatLike = 0.1):
        super().__init__()
        if in_channels < 7:
            raise ValueError(f"Conv2dSubsampling needs >= 7 input features, got {in_channels}")
        self.conv = nn.Sequential(
            nn.Conv2d(1, layer1_channels, kernel_size=3, padding=(0, 1)),
            ScaleGrad(0.2),
            Balancer(layer1_channels, channel_dim=1, max_abs=1.0),
            SwooshR(),
            nn.Conv2d(layer1_channels, layer2_channels, kernel_size=3, stride=2, padding=0),
            Balancer(layer2_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
            nn.Conv2d(layer2_channels, layer3_channels, kernel_size=3, stride=(1, 2)),
            Balancer(layer3_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
        )
        self.convnext = ConvNeXt(layer3_channels, kernel_size=(7, 7))
        self.out_width = (((in_channels - 1) // 2) - 1) // 2
        self.layer3_channels = layer3_channels
        self.out = nn.Linear(self.out_width * layer3_channels, out_channels)
        self.out_whiten = Whiten(num_groups=1,
                                 whitening_limit=ScheduledFloat((0.0, 4.0), (20000.0, 8.0), default=4.0),
                                 prob=(0.025, 0.25), grad_scale=0.02)
        self.out_norm = BiasNorm(out_channels)
        self.dropout = Dropout3(dropout, shared_dim=1)

    def _project(self, x: Tensor) -> Tensor:
        n, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(n, t, c * f))

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (N, T, F) fbank; x_lens: (N,) int64 frames. Returns ((N, T', C), (N,)) with
        T' = (T - 7) // 2.

        Unlike icefall, conv frames past each sequence's length are zeroed before the ConvNeXt so
        that padding never leaks into the last 3 real frames; a batch then gives each utterance
        exactly the output it gets alone (identical to icefall for unpadded input).
        """
        if x.shape[1] < 9:
            raise ValueError(f"Conv2dSubsampling needs at least 9 input frames, got {x.shape[1]}")
        # channels_last throughout (mkldnn convs keep it): the ConvNeXt then needs no layout
        # copies and its gradients arrive in the (N, T, F, C) order its matmuls want.
        x = self.conv(x.unsqueeze(1).contiguous(memory_format=torch.channels_last))  # (N, C, T', F')
        lens = (x_lens - 7) // 2
        if bool((lens < x.shape[2]).any()):
            pad = torch.arange(x.shape[2], device=x.device)[None, :] >= lens[:, None]
            x = x.masked_fill(pad[:, None, :, None], 0.0)
        x = self.convnext(x)
        x = self._project(x)
        x = self.out_whiten(x)
        x = self.out_norm(x)
        x = self.dropout(x)
        return x, lens

    def streaming_forward(self, x: Tensor, x_lens: Tensor,
                          cached_left_pad: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One chunk: x (N, T, F) with T = 2 * chunk + 13 fbank frames (chunk at 50 Hz plus the
        conv and ConvNeXt context). Returns ((N, (T - 7) // 2 - 3, C), lengths, new cache
        (N, layer3_channels, 3, out_width))."""
        x = self.conv(x.unsqueeze(1))
        x, cached_left_pad = self.convnext.streaming_forward(x, cached_left_pad)
        x = self.out_norm(self._project(x))
        return x, (x_lens - 7) // 2 - 3, cached_left_pad

    def get_init_states(self, batch_size: int = 1,
                        device: torch.device = torch.device("cpu")) -> Tensor:
        """Zero ConvNeXt left-context cache, (N, layer3_channels, 3, out_width)."""
        return torch.zeros(batch_size, self.layer3_channels, self.convnext.padding[0],
                           self.out_width, device=device)
