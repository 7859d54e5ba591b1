"""Zipformer2 encoder (= `encoder` of an icefall AsrModel; icefall's `zipformer/zipformer.py`,
Zipformer paper, Yao et al. 2023, arXiv 2310.11230).

Time-first layout: input (T, N, encoder_dim[0]) at 50 Hz, output (ceil(T/2), N, max(encoder_dim))
at 25 Hz. Six stacks run at 50, 25, 12.5, 6.25, 12.5, 25 Hz (downsampling_factor 1,2,4,8,4,2).
"""
import copy
import random
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from zipformer_rwkv.zipformer.attention import (
    CompactRelPositionalEncoding,
    NonlinAttention,
    RelPositionMultiheadAttentionWeights,
    SelfAttention,
)
from zipformer_rwkv.zipformer.modules import (
    BypassModule,
    ConvolutionModule,
    FeedforwardModule,
    SimpleDownsample,
    SimpleUpsample,
)
from zipformer_rwkv.zipformer.scaling import (
    Balancer,
    BiasNorm,
    FloatLike,
    ScheduledFloat,
    Whiten,
    _whitening_schedule,
    convert_num_channels,
)

NUM_LAYER_STATES = 6  # cached_key, cached_nonlin_attn, cached_val1, cached_val2, cached_conv1/2


class Zipformer2EncoderLayer(nn.Module):
    """One Zipformer2 block (icefall `Zipformer2EncoderLayer`): ff1, nonlin_attention, self_attn1,
    conv_module1, ff2, bypass_mid, self_attn2, conv_module2, ff3, BiasNorm, bypass — all sharing one
    set of attention weights. (T, N, D) -> (T, N, D).

    Training-only stochastic depth (attention/conv/ff skip, constant attention, layer bypass)
    follows ScheduledFloat rates driven by `set_batch_count`; everything is deterministic in eval.
    """

    def __init__(self, embed_dim: int, pos_dim: int, num_heads: int, query_head_dim: int,
                 pos_head_dim: int, value_head_dim: int, feedforward_dim: int,
                 dropout: FloatLike = 0.1, cnn_module_kernel: int = 31, causal: bool = False,
                 attention_skip_rate: FloatLike = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000, 0.0), default=0),
                 conv_skip_rate: FloatLike = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000, 0.0), default=0),
                 const_attention_rate: FloatLike = ScheduledFloat((0.0, 0.25), (4000.0, 0.025), default=0),
                 ff2_skip_rate: FloatLike = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0)),
                 ff3_skip_rate: FloatLike = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0)),
                 bypass_skip_rate: FloatLike = ScheduledFloat((0.0, 0.5), (4000.0, 0.02), default=0)):
        super().__init__()
        self.embed_dim = embed_dim
        self.bypass = BypassModule(embed_dim, skip_rate=bypass_skip_rate, straight_through_rate=0)
        self.bypass_mid = BypassModule(embed_dim, straight_through_rate=0)
        self.attention_skip_rate = copy.deepcopy(attention_skip_rate)
        self.conv_skip_rate = copy.deepcopy(conv_skip_rate)
        self.ff2_skip_rate = copy.deepcopy(ff2_skip_rate)
        self.ff3_skip_rate = copy.deepcopy(ff3_skip_rate)
        self.const_attention_rate = copy.deepcopy(const_attention_rate)
        self.self_attn_weights = RelPositionMultiheadAttentionWeights(
            embed_dim, pos_dim=pos_dim, num_heads=num_heads, query_head_dim=query_head_dim,
            pos_head_dim=pos_head_dim, dropout=0.0)
        self.self_attn1 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.self_attn2 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.feed_forward1 = FeedforwardModule(embed_dim, (feedforward_dim * 3) // 4, dropout)
        self.feed_forward2 = FeedforwardModule(embed_dim, feedforward_dim, dropout)
        self.feed_forward3 = FeedforwardModule(embed_dim, (feedforward_dim * 5) // 4, dropout)
        self.nonlin_attention = NonlinAttention(embed_dim, hidden_channels=3 * embed_dim // 4)
        self.conv_module1 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        self.conv_module2 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        # Unused legacy parameter ("TODO: remove it" in icefall); kept for state-dict compatibility.
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.norm = BiasNorm(embed_dim)
        self.balancer1 = Balancer(embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55,
                                  min_abs=0.2, max_abs=4.0)
        self.balancer_na = Balancer(embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
                                    min_abs=ScheduledFloat((0.0, 0.004), (4000.0, 0.02)), prob=0.05)
        self.balancer_ff2 = Balancer(embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
                                     min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.1), default=0.0),
                                     max_abs=2.0, prob=0.05)
        self.balancer_ff3 = Balancer(embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
                                     min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.2), default=0.0),
                                     max_abs=4.0, prob=0.05)
        self.whiten = Whiten(num_groups=1, whitening_limit=_whitening_schedule(4.0, ratio=3.0),
                             prob=(0.025, 0.25), grad_scale=0.01)
        self.balancer2 = Balancer(embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55,
                                  min_abs=0.1, max_abs=4.0)

    def _seq_mask(self, x: Tensor, rate: float) -> Optional[Tensor]:
        """(N, 1) 0/1 mask dropping whole sequences with probability `rate` (training only)."""
        if not self.training or rate == 0.0:
            return None
        return (torch.rand(x.shape[1], 1, device=x.device) > rate).to(x.dtype)

    @staticmethod
    def _masked(x: Tensor, mask: Optional[Tensor]) -> Tensor:
        return x if mask is None else x * mask

    def forward(self, src: Tensor, pos_emb: Tensor, chunk_size: int = -1,
                attn_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """src: (T, N, D); pos_emb: (1, 2T-1, pos_dim); attn_mask: (T, T) bool (True = masked);
        src_key_padding_mask: (N, T) bool (True = pad). Returns (T, N, D)."""
        src_orig = src
        train = self.training
        attn_weights = self.self_attn_weights(src, pos_emb=pos_emb, attn_mask=attn_mask,
                                              key_padding_mask=src_key_padding_mask)
        src = src + self.feed_forward1(src)
        attn_mask_seq = self._seq_mask(src, float(self.attention_skip_rate) if train else 0.0)
        selected = attn_weights[0:1]
        if train and random.random() < float(self.const_attention_rate):
            # Uniform weights over the non-masked keys: pushes nonlin_attention to average.
            selected = (selected > 0.0).to(selected.dtype)
            selected = selected * (1.0 / selected.sum(dim=-1, keepdim=True))
        na = self.balancer_na(self.nonlin_attention(src, selected))
        src = src + self._masked(na, attn_mask_seq)
        src = src + self._masked(self.self_attn1(src, attn_weights), attn_mask_seq)
        conv_rate = float(self.conv_skip_rate) if train else 0.0
        conv = self.conv_module1(src, chunk_size=chunk_size, src_key_padding_mask=src_key_padding_mask)
        src = src + self._masked(conv, self._seq_mask(src, conv_rate))
        ff2 = self.balancer_ff2(self.feed_forward2(src))
        src = src + self._masked(ff2, self._seq_mask(src, float(self.ff2_skip_rate) if train else 0.0))
        src = self.bypass_mid(src_orig, src)
        src = src + self._masked(self.self_attn2(src, attn_weights), attn_mask_seq)
        conv = self.conv_module2(src, chunk_size=chunk_size, src_key_padding_mask=src_key_padding_mask)
        src = src + self._masked(conv, self._seq_mask(src, conv_rate))
        ff3 = self.balancer_ff3(self.feed_forward3(src))
        src = src + self._masked(ff3, self._seq_mask(src, float(self.ff3_skip_rate) if train else 0.0))
        src = self.norm(self.balancer1(src))
        src = self.bypass(src_orig, src)
        return self.whiten(self.balancer2(src))

    def streaming_forward(self, src: Tensor, pos_emb: Tensor, states: Sequence[Tensor],
                          left_context_len: int,
                          src_key_padding_mask: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """One chunk. src: (T, N, D); pos_emb: (1, 2T-1+L, pos_dim); states: the 6 layer caches
        (see `Zipformer2.get_init_states`); src_key_padding_mask: (N, L + T).
        Returns (T, N, D) and the 6 new caches."""
        cached_key, cached_na, cached_val1, cached_val2, cached_conv1, cached_conv2 = states
        src_orig = src
        chunk_mask = src_key_padding_mask[:, left_context_len:]
        attn_weights, cached_key = self.self_attn_weights.streaming_forward(
            src, pos_emb=pos_emb, cached_key=cached_key, left_context_len=left_context_len,
            key_padding_mask=src_key_padding_mask)
        src = src + self.feed_forward1(src)
        na, cached_na = self.nonlin_attention.streaming_forward(
            src, attn_weights[0:1], cached_x=cached_na, left_context_len=left_context_len)
        src = src + na
        att, cached_val1 = self.self_attn1.streaming_forward(src, attn_weights, cached_val1, left_context_len)
        src = src + att
        conv, cached_conv1 = self.conv_module1.streaming_forward(src, cached_conv1, chunk_mask)
        src = src + conv
        src = src + self.feed_forward2(src)
        src = self.bypass_mid(src_orig, src)
        att, cached_val2 = self.self_attn2.streaming_forward(src, attn_weights, cached_val2, left_context_len)
        src = src + att
        conv, cached_conv2 = self.conv_module2.streaming_forward(src, cached_conv2, chunk_mask)
        src = src + conv
        src = src + self.feed_forward3(src)
        src = self.bypass(src_orig, self.norm(src))
        return src, [cached_key, cached_na, cached_val1, cached_val2, cached_conv1, cached_conv2]


class Zipformer2Encoder(nn.Module):
    """A stack of `num_layers` copies of `encoder_layer` sharing one positional encoding.

    Layer i's bypass skip rate decays from `initial_layerdrop_rate` to `final_layerdrop_rate`
    over its slice of [warmup_begin, warmup_end] (batches). (T, N, D) -> (T, N, D)."""

    def __init__(self, encoder_layer: Zipformer2EncoderLayer, num_layers: int, pos_dim: int,
                 dropout: FloatLike, warmup_begin: float, warmup_end: float,
                 initial_layerdrop_rate: float = 0.5, final_layerdrop_rate: float = 0.05):
        super().__init__()
        self.encoder_pos = CompactRelPositionalEncoding(pos_dim, dropout_rate=0.15, length_factor=1.0)
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers
        if not 0 <= warmup_begin <= warmup_end:
            raise ValueError(f"bad warmup window {warmup_begin}..{warmup_end}")
        delta = (warmup_end - warmup_begin) / num_layers
        begin = warmup_begin
        for layer in self.layers:
            layer.bypass.skip_rate = ScheduledFloat((begin, initial_layerdrop_rate),
                                                    (begin + delta, final_layerdrop_rate), default=0.0)
            begin += delta

    def forward(self, src: Tensor, chunk_size: int = -1, feature_mask: Union[Tensor, float] = 1.0,
                attn_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None) -> Tensor:
        pos_emb = self.encoder_pos(src)
        out = src * feature_mask
        for layer in self.layers:
            out = layer(out, pos_emb, chunk_size=chunk_size, attn_mask=attn_mask,
                        src_key_padding_mask=src_key_padding_mask)
            out = out * feature_mask
        return out

    def streaming_forward(self, src: Tensor, states: Sequence[Tensor], left_context_len: int,
                          src_key_padding_mask: Tensor) -> Tuple[Tensor, List[Tensor]]:
        pos_emb = self.encoder_pos(src, left_context_len)
        out, new_states = src, []
        for i, layer in enumerate(self.layers):
            layer_states = states[i * NUM_LAYER_STATES:(i + 1) * NUM_LAYER_STATES]
            out, s = layer.streaming_forward(out, pos_emb, layer_states, left_context_len,
                                             src_key_padding_mask)
            new_states += s
        return out, new_states


class DownsampledZipformer2Encoder(nn.Module):
    """Runs `encoder` at 1/ds of the input frame rate: SimpleDownsample, encoder, SimpleUpsample,
    then `out_combiner` (BypassModule) with the input. (T, N, D) -> (T, N, D)."""

    def __init__(self, encoder: Zipformer2Encoder, dim: int, downsample: int, dropout: FloatLike,
                 causal: bool):
        super().__init__()
        self.downsample_factor = downsample
        self.downsample = SimpleDownsample(dim, downsample, dropout, causal)
        self.num_layers = encoder.num_layers
        self.encoder = encoder
        self.upsample = SimpleUpsample(dim, downsample)
        self.out_combiner = BypassModule(dim, straight_through_rate=0)

    def forward(self, src: Tensor, chunk_size: int = -1, feature_mask: Union[Tensor, float] = 1.0,
                attn_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None,
                lengths: Optional[Tensor] = None) -> Tensor:
        """As `Zipformer2Encoder.forward`; the masks are at this stack's rate, `lengths` (N,)
        at the input rate."""
        src_orig = src
        ds = self.downsample_factor
        src = self.downsample(src, lengths)
        if attn_mask is not None:
            attn_mask = attn_mask[::ds, ::ds]
        src = self.encoder(src, chunk_size=chunk_size // ds, feature_mask=feature_mask,
                           attn_mask=attn_mask, src_key_padding_mask=src_key_padding_mask)
        src = self.upsample(src)[: src_orig.shape[0]]
        return self.out_combiner(src_orig, src)

    def streaming_forward(self, src: Tensor, states: Sequence[Tensor], left_context_len: int,
                          src_key_padding_mask: Tensor) -> Tuple[Tensor, List[Tensor]]:
        src_orig = src
        src = self.downsample(src)
        src, new_states = self.encoder.streaming_forward(src, states, left_context_len,
                                                         src_key_padding_mask)
        src = self.upsample(src)[: src_orig.shape[0]]
        return self.out_combiner(src_orig, src), new_states


def _to_tuple(x: Union[int, Sequence[int]], n: int, name: str) -> Tuple[int, ...]:
    if isinstance(x, int):
        x = (x,)
    x = tuple(int(v) for v in x)
    if len(x) == 1:
        return x * n
    if len(x) != n:
        raise ValueError(f"{name} needs 1 or {n} values (one per stack), got {len(x)}: {x}")
    return x


class Zipformer2(nn.Module):
    """The Zipformer2 encoder (icefall `Zipformer2`).

    forward(x (T, N, encoder_dim[0]) at 50 Hz, x_lens (N,), src_key_padding_mask (N, T)) ->
    ((ceil(T/2), N, max(encoder_dim)) at 25 Hz, (x_lens + 1) // 2).

    With `causal=True` each training forward draws `chunk_size` (frames at 50 Hz) from the
    `chunk_size` list and left context from `left_context_frames` (icefall's `get_chunk_info`);
    in eval the first entry of each list is used, so a model configured with one chunk size
    and one left context reproduces `streaming_forward` exactly.
    """

    def __init__(self, output_downsampling_factor: int = 2,
                 downsampling_factor: Sequence[int] = (2, 4),
                 encoder_dim: Union[int, Sequence[int]] = 384,
                 num_encoder_layers: Union[int, Sequence[int]] = 4,
                 encoder_unmasked_dim: Union[int, Sequence[int]] = 256,
                 query_head_dim: Union[int, Sequence[int]] = 24,
                 pos_head_dim: Union[int, Sequence[int]] = 4,
                 value_head_dim: Union[int, Sequence[int]] = 12,
                 num_heads: Union[int, Sequence[int]] = 8,
                 feedforward_dim: Union[int, Sequence[int]] = 1536,
                 cnn_module_kernel: Union[int, Sequence[int]] = 31,
                 pos_dim: int = 192, dropout: Optional[FloatLike] = None,
                 warmup_batches: float = 4000.0, causal: bool = False,
                 chunk_size: Sequence[int] = (-1,), left_context_frames: Sequence[int] = (-1,)):
        super().__init__()
        if dropout is None:
            dropout = ScheduledFloat((0.0, 0.3), (20000.0, 0.1))
        if output_downsampling_factor != 2:
            raise ValueError("only output_downsampling_factor=2 is supported (as icefall)")
        n = len(downsampling_factor)
        self.output_downsampling_factor = output_downsampling_factor
        self.downsampling_factor = tuple(downsampling_factor)
        self.encoder_dim = _to_tuple(encoder_dim, n, "encoder_dim")
        self.encoder_unmasked_dim = _to_tuple(encoder_unmasked_dim, n, "encoder_unmasked_dim")
        self.num_encoder_layers = _to_tuple(num_encoder_layers, n, "num_encoder_layers")
        self.query_head_dim = _to_tuple(query_head_dim, n, "query_head_dim")
        self.value_head_dim = _to_tuple(value_head_dim, n, "value_head_dim")
        pos_head_dim = _to_tuple(pos_head_dim, n, "pos_head_dim")
        self.num_heads = _to_tuple(num_heads, n, "num_heads")
        feedforward_dim = _to_tuple(feedforward_dim, n, "feedforward_dim")
        self.cnn_module_kernel = _to_tuple(cnn_module_kernel, n, "cnn_module_kernel")
        self.causal = causal
        self.chunk_size = list(chunk_size)
        self.left_context_frames = list(left_context_frames)
        for u, d in zip(self.encoder_unmasked_dim, self.encoder_dim):
            if u > d:
                raise ValueError(f"encoder_unmasked_dim {self.encoder_unmasked_dim} must be <= "
                                 f"encoder_dim {self.encoder_dim}")
        encoders = []
        for i in range(n):
            layer = Zipformer2EncoderLayer(
                embed_dim=self.encoder_dim[i], pos_dim=pos_dim, num_heads=self.num_heads[i],
                query_head_dim=self.query_head_dim[i], pos_head_dim=pos_head_dim[i],
                value_head_dim=self.value_head_dim[i], feedforward_dim=feedforward_dim[i],
                dropout=dropout, cnn_module_kernel=self.cnn_module_kernel[i], causal=causal)
            # Stacks warm up one after the other (the front end gets the first slot).
            encoder = Zipformer2Encoder(
                layer, self.num_encoder_layers[i], pos_dim=pos_dim, dropout=dropout,
                warmup_begin=warmup_batches * (i + 1) / (n + 1),
                warmup_end=warmup_batches * (i + 2) / (n + 1),
                final_layerdrop_rate=0.035 * (self.downsampling_factor[i] ** 0.5))
            if self.downsampling_factor[i] != 1:
                encoder = DownsampledZipformer2Encoder(encoder, dim=self.encoder_dim[i],
                                                       downsample=self.downsampling_factor[i],
                                                       dropout=dropout, causal=causal)
            encoders.append(encoder)
        self.encoders = nn.ModuleList(encoders)
        self.downsample_output = SimpleDownsample(max(self.encoder_dim),
                                                  downsample=output_downsampling_factor,
                                                  dropout=dropout, causal=causal)

    def get_feature_masks(self, x: Tensor) -> List[Union[Tensor, float]]:
        """Per-stack (1, N, D) masks that zero channels above `encoder_unmasked_dim` for ~12.5%
        (first half) / ~23% (second half) of sequences in training; 1.0 in eval."""
        n_enc = len(self.encoder_dim)
        if not self.training:
            return [1.0] * n_enc
        _, batch, _ = x.shape
        p = 0.125
        mask1 = (torch.rand(1, batch, 1, device=x.device) > p).to(x.dtype)
        mask2 = torch.logical_and(mask1, torch.rand(1, batch, 1, device=x.device) > p).to(x.dtype)
        masks = []
        for d, u1 in zip(self.encoder_dim, self.encoder_unmasked_dim):
            m = torch.ones(1, batch, d, dtype=x.dtype, device=x.device)
            u2 = u1 + (d - u1) // 2
            m[:, :, u1:u2] *= mask1
            m[:, :, u2:] *= mask2
            masks.append(m)
        return masks

    def get_chunk_info(self) -> Tuple[int, int]:
        """(chunk_size, left_context_chunks) for this forward; (-1, -1) = full attention."""
        if not self.causal:
            return -1, -1
        chunk_size = random.choice(self.chunk_size) if self.training else self.chunk_size[0]
        if chunk_size == -1:
            return -1, -1
        left = random.choice(self.left_context_frames) if self.training else self.left_context_frames[0]
        return chunk_size, max(left // chunk_size, 1) if left != -1 else -1

    def _get_attn_mask(self, x: Tensor, chunk_size: int,
                       left_context_chunks: int) -> Optional[Tensor]:
        """(T, T) bool, True where frame i may not attend frame j: j's chunk is after i's or more
        than `left_context_chunks` chunks before it."""
        if chunk_size <= 0:
            return None
        if any(chunk_size % d for d in self.downsampling_factor):
            raise ValueError(f"chunk_size {chunk_size} must be divisible by every downsampling "
                             f"factor {self.downsampling_factor}")
        if left_context_chunks < 0:
            left_context_chunks = 1000000
        c = torch.arange(x.shape[0], device=x.device) // chunk_size
        src_c, tgt_c = c, c.unsqueeze(-1)
        return (src_c > tgt_c) | (src_c < tgt_c - left_context_chunks)

    def _get_full_dim_output(self, outputs: List[Tensor]) -> Tensor:
        """Concatenate, for each channel range, the latest stack output that has it."""
        pieces = [outputs[-1]]
        cur = self.encoder_dim[-1]
        for i in range(len(outputs) - 2, -1, -1):
            d = self.encoder_dim[i]
            if d > cur:
                pieces.append(outputs[i][..., cur:d])
                cur = d
        return torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]

    def forward(self, x: Tensor, x_lens: Tensor,
                src_key_padding_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """x: (T, N, encoder_dim[0]); x_lens: (N,); src_key_padding_mask: (N, T) True = pad.
        Returns ((ceil(T/2), N, max(encoder_dim)), (x_lens + 1) // 2)."""
        feature_masks = self.get_feature_masks(x)
        chunk_size, left_context_chunks = self.get_chunk_info()
        attn_mask = self._get_attn_mask(x, chunk_size, left_context_chunks)
        lengths = x_lens if src_key_padding_mask is not None else None
        outputs = []
        for i, module in enumerate(self.encoders):
            ds = self.downsampling_factor[i]
            x = convert_num_channels(x, self.encoder_dim[i])
            mask = None if src_key_padding_mask is None else src_key_padding_mask[..., ::ds]
            kwargs = {} if ds == 1 else {"lengths": lengths}
            x = module(x, chunk_size=chunk_size, feature_mask=feature_masks[i], attn_mask=attn_mask,
                       src_key_padding_mask=mask, **kwargs)
            outputs.append(x)
        x = self.downsample_output(self._get_full_dim_output(outputs), lengths)
        return x, (x_lens + 1) // 2

    def streaming_forward(self, x: Tensor, x_lens: Tensor, states: Sequence[Tensor],
                          src_key_padding_mask: Tensor) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """One chunk of a causal model. x: (chunk, N, encoder_dim[0]) at 50 Hz, chunk divisible
        by every downsampling factor; states: from `get_init_states` or the previous call;
        src_key_padding_mask: (N, left_context_frames[0] + chunk), True for left-context frames
        not yet filled and for padding. Returns ((chunk/2, N, max(encoder_dim)), lengths,
        new states)."""
        outputs, new_states, offset = [], [], 0
        left = self.left_context_frames[0]
        for i, module in enumerate(self.encoders):
            ds = self.downsampling_factor[i]
            nl = module.num_layers * NUM_LAYER_STATES
            x = convert_num_channels(x, self.encoder_dim[i])
            x, s = module.streaming_forward(x, states[offset:offset + nl], left_context_len=left // ds,
                                            src_key_padding_mask=src_key_padding_mask[..., ::ds])
            offset += nl
            outputs.append(x)
            new_states += s
        x = self.downsample_output(self._get_full_dim_output(outputs))
        return x, (x_lens + 1) // 2, new_states

    def get_init_states(self, batch_size: int = 1,
                        device: torch.device = torch.device("cpu")) -> List[Tensor]:
        """Zero caches, 6 per layer in stack order: cached_key (L/ds, N, H*dq),
        cached_nonlin_attn (1, N, L/ds, 3D/4), cached_val1/2 (L/ds, N, H*dv),
        cached_conv1/2 (N, D, kernel//2), with L = left_context_frames[0]."""
        left = self.left_context_frames[0]
        if not self.causal or left <= 0:
            raise ValueError("streaming needs a causal model with left_context_frames[0] > 0, "
                             f"got causal={self.causal}, left_context_frames={self.left_context_frames}")
        states = []
        for i, module in enumerate(self.encoders):
            d, ds, h = self.encoder_dim[i], self.downsampling_factor[i], self.num_heads[i]
            lc = left // ds
            for _ in range(module.num_layers):
                conv = torch.zeros(batch_size, d, self.cnn_module_kernel[i] // 2, device=device)
                states += [
                    torch.zeros(lc, batch_size, self.query_head_dim[i] * h, device=device),
                    torch.zeros(1, batch_size, lc, 3 * d // 4, device=device),
                    torch.zeros(lc, batch_size, self.value_head_dim[i] * h, device=device),
                    torch.zeros(lc, batch_size, self.value_head_dim[i] * h, device=device),
                    conv, conv.clone(),
                ]
        return states
