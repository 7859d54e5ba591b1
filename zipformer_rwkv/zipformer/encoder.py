"""`ZipformerEncoder`: fbank (N, T, 80) at 100 Hz -> encoder_out (N, T', C) at 25 Hz.

Holds `encoder_embed` (Conv2dSubsampling) and `encoder` (Zipformer2) under icefall's names, so its
state dict is exactly the `encoder_embed.*` / `encoder.*` part of an icefall AsrModel.
"""
from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor, nn

from zipformer_rwkv.utils import make_pad_mask
from zipformer_rwkv.zipformer.config import ZipformerConfig, resolve_encoder_config
from zipformer_rwkv.zipformer.scaling import ScheduledFloat
from zipformer_rwkv.zipformer.subsampling import Conv2dSubsampling
from zipformer_rwkv.zipformer.zipformer import Zipformer2

# fbank frames consumed by encoder_embed beyond 2 * chunk: 7 for the convs + 2 * 3 for ConvNeXt.
EMBED_RIGHT_CONTEXT = 13
# log(1e-10): fbank value of digital silence, used by icefall to pad the tail of a stream.
LOG_EPS = -23.025850929940457


SUBSAMPLING_FACTOR = 4  # fbank frames (100 Hz) per encoder output frame (25 Hz): `encoder_out_length`


def encoder_out_length(num_frames: Any) -> Any:
    """Output frames (25 Hz) for `num_frames` fbank frames (100 Hz): ((T - 7) // 2 + 1) // 2.
    Works on ints and integer tensors; the data filters use it too (icefall's zipformer/train.py,
    `remove_short_and_long_utt`, has the same formula)."""
    return (((num_frames - 7) // 2) + 1) // 2


def utterance_cmn(x: Tensor, x_lens: Tensor) -> Tensor:
    """Per-utterance cepstral mean normalisation: each utterance's valid frames minus their mean.

    x: (N, T, C) fbank at 100 Hz; x_lens: (N,) valid frames (>= 1). Returns a new (N, T, C) tensor;
    padded frames (t >= x_lens[n]) are passed through unchanged, so they still read as padding.
    """
    valid = (torch.arange(x.shape[1], device=x.device) < x_lens.unsqueeze(1)).unsqueeze(2).to(x.dtype)
    mean = (x * valid).sum(dim=1, keepdim=True) / x_lens.view(-1, 1, 1).to(x.dtype)
    return x - mean * valid


def running_cmn(x: Tensor, x_lens: Tensor) -> Tensor:
    """Causal (running) cepstral mean normalisation: frame t minus the mean of frames 0..t.

    x: (N, T, C) fbank at 100 Hz; x_lens: (N,) valid frames. Returns a new (N, T, C) tensor; padded
    frames (t >= x_lens[n]) pass through unchanged. Sums in float64, so `RunningCmn` on the same
    frames in pieces gives the same values.
    """
    count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=torch.float64).view(1, -1, 1)
    mean = (x.double().cumsum(dim=1) / count).to(x.dtype)
    valid = (torch.arange(x.shape[1], device=x.device) < x_lens.unsqueeze(1)).unsqueeze(2)
    return torch.where(valid, x - mean, x)


class RunningCmn:
    """`running_cmn` of one stream fed in pieces: the sum and count of the frames so far are the state.

    Args:
      dim: feature dimension C; device: where the sums live.
    """

    def __init__(self, dim: int, device: torch.device = torch.device("cpu")):
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.count = 0

    def __call__(self, x: Tensor) -> Tensor:
        """x: (T, C) the stream's next frames -> (T, C) normalised."""
        if x.shape[0] == 0:
            return x
        sums = self.sum + x.double().cumsum(dim=0)
        count = torch.arange(self.count + 1, self.count + x.shape[0] + 1, device=x.device, dtype=torch.float64)
        self.sum, self.count = sums[-1], self.count + x.shape[0]
        return x - (sums / count.unsqueeze(1)).to(x.dtype)


class ZipformerEncoder(nn.Module):
    """Zipformer2 speech encoder (front end + encoder), icefall state-dict compatible.

    Attributes:
      config: the ZipformerConfig it was built from.
      encoder_out_dim: channels of the output, max(config.encoder_dim).
    """

    def __init__(self, config: Optional[ZipformerConfig] = None):
        super().__init__()
        cfg = config or ZipformerConfig()
        self.config = cfg
        self.encoder_out_dim = cfg.output_dim
        self.encoder_embed = Conv2dSubsampling(
            in_channels=cfg.feature_dim, out_channels=cfg.encoder_dim[0],
            layer3_channels=cfg.encoder_embed_channels,
            dropout=ScheduledFloat((0.0, 0.3), (20000.0, 0.1)))
        self.encoder = Zipformer2(
            output_downsampling_factor=2, downsampling_factor=cfg.downsampling_factor,
            num_encoder_layers=cfg.num_encoder_layers, encoder_dim=cfg.encoder_dim,
            encoder_unmasked_dim=cfg.encoder_unmasked_dim, query_head_dim=cfg.query_head_dim,
            pos_head_dim=cfg.pos_head_dim, value_head_dim=cfg.value_head_dim,
            pos_dim=cfg.pos_dim, num_heads=cfg.num_heads, feedforward_dim=cfg.feedforward_dim,
            cnn_module_kernel=cfg.cnn_module_kernel, dropout=None, warmup_batches=4000.0,
            causal=cfg.causal, chunk_size=cfg.chunk_size,
            left_context_frames=cfg.left_context_frames)

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """x: (N, T, feature_dim) float fbank at 100 Hz; x_lens: (N,) int64 valid frames.

        Returns encoder_out (N, T', encoder_out_dim) at 25 Hz with T' = ((T - 7) // 2 + 1) // 2,
        and encoder_out_lens (N,) = ((x_lens - 7) // 2 + 1) // 2. Frames past a sequence's length
        never influence its real frames.

        Raises:
          ValueError: wrong input rank/feature size, or an utterance shorter than 9 frames.
        """
        if x.ndim != 3 or x.shape[2] != self.config.feature_dim:
            raise ValueError(f"ZipformerEncoder expects (N, T, {self.config.feature_dim}) fbank, "
                             f"got shape {tuple(x.shape)}")
        if x_lens.shape != (x.shape[0],):
            raise ValueError(f"x_lens must have shape ({x.shape[0]},), got {tuple(x_lens.shape)}")
        if int(x_lens.min()) < 9:
            raise ValueError(f"every utterance needs >= 9 fbank frames (90 ms), got "
                             f"x_lens.min()={int(x_lens.min())}")
        if self.config.utterance_cmn:
            x = utterance_cmn(x, x_lens)
        if self.config.running_cmn:
            x = running_cmn(x, x_lens)
        x, x_lens = self.encoder_embed(x, x_lens)
        mask = make_pad_mask(x_lens, x.shape[1])
        out, out_lens = self.encoder(x.permute(1, 0, 2), x_lens, mask)
        return out.permute(1, 0, 2), out_lens

    # ---------------------------------------------------------------- streaming
    @property
    def decode_chunk_size(self) -> int:
        """Chunk size used for streaming, frames at 50 Hz (config.chunk_size[0])."""
        return self.config.chunk_size[0]

    @property
    def chunk_input_frames(self) -> Tuple[int, int]:
        """(fbank frames fed per streaming call, fbank frames to advance): (2 * chunk + 13, 2 * chunk)."""
        c = self.decode_chunk_size
        return 2 * c + EMBED_RIGHT_CONTEXT, 2 * c

    def get_init_states(self, batch_size: int = 1,
                        device: torch.device = torch.device("cpu")) -> List[Tensor]:
        """Initial streaming states in icefall's layout: 6 caches per encoder layer (see
        `Zipformer2.get_init_states`), then the ConvNeXt cache (N, 128, 3, 19), then
        processed_lens (N,) int64 (50 Hz frames already seen).

        Raises:
          ValueError: model not causal, or chunk_size[0] / left_context_frames[0] not positive.
        """
        if self.decode_chunk_size <= 0:
            raise ValueError(f"streaming needs chunk_size[0] > 0, got {self.config.chunk_size}")
        states = self.encoder.get_init_states(batch_size, device)
        states.append(self.encoder_embed.get_init_states(batch_size, device))
        states.append(torch.zeros(batch_size, dtype=torch.int64, device=device))
        return states

    def streaming_forward(self, x: Tensor, x_lens: Tensor,
                          states: List[Tensor]) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """One streaming step of a causal model.

        x: (N, 2 * chunk + 13, feature_dim) fbank, the window starting at 2 * chunk * step (with
        `running_cmn`, already normalised: windows overlap, so the caller normalises each frame
        once, e.g. with `RunningCmn`);
        x_lens: (N,) valid frames in the window; states: from `get_init_states` or the previous
        call. Returns encoder_out (N, chunk / 2, C) (25 Hz frames of this chunk), their lengths,
        and the new states. Equals the chunk-masked full forward with
        chunk_size=chunk_size[0], left context left_context_frames[0] (embed frames are 3 behind
        the fbank window because ConvNeXt looks 3 frames ahead).
        """
        chunk = self.decode_chunk_size
        left = self.config.left_context_frames[0]
        embed_cache, processed_lens = states[-2], states[-1]
        t_in = x.shape[1]
        x, x_lens, embed_cache = self.encoder_embed.streaming_forward(x, x_lens, embed_cache)
        if x.shape[1] != chunk:
            raise ValueError(f"streaming_forward needs {2 * chunk + EMBED_RIGHT_CONTEXT} fbank "
                             f"frames per call (chunk_size {chunk}), got {t_in}")
        pad_mask = make_pad_mask(x_lens, chunk)
        # Left-context slots not yet filled (at the start of the stream) are masked.
        slots = torch.arange(left, device=x.device).expand(x.shape[0], left)
        processed_mask = (processed_lens.unsqueeze(1) <= slots).flip(1)
        mask = torch.cat([processed_mask, pad_mask], dim=1)
        out, out_lens, enc_states = self.encoder.streaming_forward(
            x.permute(1, 0, 2), x_lens, states[:-2], mask)
        return out.permute(1, 0, 2), out_lens, enc_states + [embed_cache, processed_lens + x_lens]

    def streaming_encode(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """Whole utterances through `streaming_forward`, chunk by chunk (what a streaming
        decoder sees). x: (N, T, feature_dim); x_lens: (N,). The tail is padded with LOG_EPS
        frames as icefall's streaming decoding does. Returns (N, T', C) and lengths, with T' and
        lengths as in `forward`; frames near the end differ slightly from `forward` because the
        last chunk sees padding instead of zeros."""
        win, shift = self.chunk_input_frames
        t_out = int(encoder_out_length(x.shape[1]))
        num_chunks = -(-t_out * 2 // self.decode_chunk_size)
        need = (num_chunks - 1) * shift + win
        x = torch.nn.functional.pad(x, (0, 0, 0, max(0, need - x.shape[1])), value=LOG_EPS)
        if self.config.running_cmn:
            x = running_cmn(x, torch.full_like(x_lens, x.shape[1]))
        states = self.get_init_states(x.shape[0], x.device)
        outs = []
        for k in range(num_chunks):
            lens = torch.full_like(x_lens, win)
            out, _, states = self.streaming_forward(x[:, k * shift: k * shift + win], lens, states)
            outs.append(out)
        return torch.cat(outs, dim=1)[:, :t_out], encoder_out_length(x_lens)


def get_encoder_model(params: Any) -> ZipformerEncoder:
    """Builds a ZipformerEncoder from icefall-style params (argparse.Namespace / AttributeDict
    / dict with `encoder_config`, `num_encoder_layers` as "2,2,3,4,3,2", ..., `causal`,
    `chunk_size`, `left_context_frames`; missing ones come from the named config)."""
    return ZipformerEncoder(resolve_encoder_config(params))
