"""Adapters from encoder frames to RWKV-7 input embeddings (`--adapter-type`).

* `stack` (`Adapter`): stacking k consecutive encoder frames lowers the rate (25 Hz -> 6.25 Hz for
  k=4) before the language model reads them, as the projector of icefall's Zipformer + Qwen2 LLM-ASR
  recipe and SLAM-ASR (arXiv 2402.08846) do: drop the trailing `T % k` frames, reshape `(N, T, C)` to
  `(N, T // k, k * C)`, then project to the RWKV width. What users with large pretrained encoders want.
* `ctc` (`CtcTokenAdapter`): the CTC head predicts RWKV-7's vocabulary; blank frames are dropped,
  runs of one label merged, and each remaining position is a posterior-weighted sum of RWKV-7's own
  input embeddings (CTC compression, arXiv 2307.03917; LegoSLM, arXiv 2505.11352).
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class Adapter(nn.Module):
    """Frame stacking by `downsample` followed by `Linear -> ReLU -> Linear` (or one Linear).

    Args:
      encoder_dim: C, channels of the encoder output.
      llm_dim: width of the RWKV-7 embeddings (`n_embd`).
      downsample: k, number of encoder frames stacked into one LLM position.
      hidden_dim: width of the MLP's hidden layer; 0 gives a single `Linear(k*C, llm_dim)`.
    """

    def __init__(self, encoder_dim: int, llm_dim: int, downsample: int = 4, hidden_dim: int = 0):
        super().__init__()
        if downsample < 1:
            raise ValueError(f"adapter downsample must be >= 1, got {downsample}")
        self.downsample = downsample
        in_dim = encoder_dim * downsample
        if hidden_dim > 0:
            self.proj = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, llm_dim)
            )
        else:
            self.proj = nn.Linear(in_dim, llm_dim)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
          x: (N, T, C) encoder output (25 Hz for Zipformer2).
          x_lens: (N,) int64, valid frames of each row of `x`.
        Returns:
          (N, T // k, llm_dim) embeddings and their (N,) lengths `x_lens // k`.
        """
        k = self.downsample
        n, t, c = x.shape
        t_out = t // k
        x = x[:, : t_out * k].reshape(n, t_out, k * c)
        return self.proj(x), torch.div(x_lens, k, rounding_mode="floor")


def ctc_compress(
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    blank_threshold: float = 0.95,
    blank: int = 0,
    chunk_frames: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which CTC frames survive compression, and the segment each one joins.

    CTC compression (Wu et al. 2023, "On decoder-only architecture for speech-to-text and large
    language model integration", arXiv 2307.03917): a frame whose blank posterior is at least
    `blank_threshold` is dropped (0.95 was the most robust threshold in CJST, arXiv 2411.07607);
    each run of consecutive kept frames with the same best label becomes one segment. Two runs of
    one label with a dropped frame between them stay two segments, as CTC reads them as two tokens.

    Args:
      log_probs: (N, T, V) CTC log-posteriors (log-softmax over V).
      lens: (N,) int64, valid frames per row.
      blank_threshold: drop frames with p(blank) >= this; 1.0 keeps every frame that is not
        certainly blank.
      blank: the blank id.
      chunk_frames: > 0: a segment never crosses a multiple of this many frames (a run is cut at
        each chunk start), so a chunk-interleaved model's chunk k reads no frame of chunk k + 1
        and streaming decoding gives the same positions; 0: runs are never cut.
    Returns:
      keep: (N, T) bool, frames that survive (never a padding frame).
      segment: (N, T) int64, each kept frame's segment index within its row (0-based); -1 elsewhere.
      num_segments: (N,) int64.
    """
    if not 0.0 < blank_threshold <= 1.0:
        raise ValueError(f"blank threshold must be in (0, 1], got {blank_threshold}")
    n, t, _ = log_probs.shape
    with torch.no_grad():
        valid = torch.arange(t, device=log_probs.device).unsqueeze(0) < lens.unsqueeze(1)
        p_blank = log_probs[..., blank].exp()
        keep = valid & (p_blank < blank_threshold)
        label = log_probs.argmax(dim=-1)
        prev_keep = F.pad(keep[:, :-1], (1, 0), value=False)
        prev_label = F.pad(label[:, :-1], (1, 0), value=-1)
        start = keep & (~prev_keep | (label != prev_label))
        if chunk_frames > 0:
            start |= keep & (torch.arange(t, device=log_probs.device) % chunk_frames == 0).unsqueeze(0)
        segment = torch.where(keep, start.long().cumsum(dim=1) - 1, torch.full_like(label, -1))
    return keep, segment, start.sum(dim=1)


def segment_mean(x: torch.Tensor, segment: torch.Tensor, num_segments: torch.Tensor) -> torch.Tensor:
    """Mean of the frames of each segment.

    Args:
      x: (N, T, D) per-frame values.
      segment: (N, T) int64 segment index per frame, -1 for frames in no segment (`ctc_compress`).
      num_segments: (N,) int64.
    Returns:
      (N, S, D) with S = max(num_segments); rows past a row's `num_segments` are zero.
    """
    n, t, d = x.shape
    s = int(num_segments.max()) if n > 0 else 0
    member = (segment >= 0).to(x.dtype)
    idx = segment.clamp(min=0)
    sums = x.new_zeros(n, s + 1, d).scatter_add(1, idx.unsqueeze(-1).expand(-1, -1, d), x * member.unsqueeze(-1))
    counts = x.new_zeros(n, s + 1).scatter_add(1, idx, member)
    return (sums / counts.clamp(min=1).unsqueeze(-1))[:, :s]


class CtcTokenAdapter(nn.Module):
    """Encoder frames -> RWKV-7 inputs in RWKV-7's own token-embedding space (`--adapter-type ctc`).

    The encoder's CTC head predicts RWKV-7's vocabulary (blank = id 0, whose row of the embedding
    table is never used). After CTC compression (`ctc_compress`), each segment enters RWKV-7 as the
    posterior-weighted sum of RWKV-7's input embeddings (LegoSLM, arXiv 2505.11352):

        e_s = sum_v q_s(v) E[v],   q_s = mean over the segment's frames of p_t(v) / (1 - p_t(blank)),  v != blank

    so a pretrained RWKV-7 reads inputs from its own embedding space from the first update, and
    the rate is about one position per output token instead of one per 4-frame stack. Optionally a
    projection of the segment-mean encoder state is added (`encoder_proj`, zero-initialised so
    training starts from the pure token-space input). Gradients reach the CTC head (and the
    encoder when it is trained) through the posteriors, and the embedding table through E.

    Args:
      encoder_dim: C, channels of the encoder output.
      llm_dim: width of the RWKV-7 embeddings (`n_embd`).
      blank_threshold: `ctc_compress`'s threshold.
      encoder_proj: add `Linear(C, llm_dim)` of the segment-mean encoder state.
      chunk_frames: segments never cross a chunk boundary (`ctc_compress`; chunk interleaving).
    """

    def __init__(self, encoder_dim: int, llm_dim: int, blank_threshold: float = 0.95, encoder_proj: bool = False,
                 chunk_frames: int = 0):
        super().__init__()
        self.chunk_frames = chunk_frames
        if not 0.0 < blank_threshold <= 1.0:
            raise ValueError(f"--adapter-blank-threshold must be in (0, 1], got {blank_threshold}")
        self.blank_threshold = blank_threshold
        self.encoder_proj = nn.Linear(encoder_dim, llm_dim) if encoder_proj else None
        if self.encoder_proj is not None:
            nn.init.zeros_(self.encoder_proj.weight)
            nn.init.zeros_(self.encoder_proj.bias)

    def forward(
        self, x: torch.Tensor, x_lens: torch.Tensor, ctc_log_probs: torch.Tensor, embedding: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
          x: (N, T, C) encoder output (25 Hz); x_lens: (N,) int64 valid frames.
          ctc_log_probs: (N, T, V) the CTC head's log-posteriors over RWKV-7's vocabulary.
          embedding: (V, llm_dim) RWKV-7's input embedding table (`llm.emb.weight`).
        Returns:
          (N, S, llm_dim) inputs, S = the most segments of a row, and (N,) int64 segments per row
          (0 for an utterance that is blank throughout).
        Raises:
          ValueError: the CTC head and the embedding table disagree on the vocabulary size.
        """
        if ctc_log_probs.size(-1) != embedding.size(0):
            raise ValueError(
                f"--adapter-type ctc needs the CTC head to predict RWKV-7's vocabulary: the head has "
                f"{ctc_log_probs.size(-1)} outputs, RWKV-7's embedding {embedding.size(0)} rows "
                "(use --tokenizer bpe with the CTC model's bpe.model)")
        keep, segment, num = ctc_compress(ctc_log_probs, x_lens, self.blank_threshold, chunk_frames=self.chunk_frames)
        p = ctc_log_probs.exp()
        non_blank = p[..., 1:]
        q = non_blank / non_blank.sum(dim=-1, keepdim=True).clamp(min=1e-6)
        frames = q.to(embedding.dtype) @ embedding[1:]  # (N, T, llm_dim): mean of a linear map = map of the mean
        if self.encoder_proj is not None:
            frames = frames + self.encoder_proj(x).to(frames.dtype)
        return segment_mean(frames, segment, num), num
