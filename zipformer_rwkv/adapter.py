"""Adapter from encoder frames to RWKV-7 input embeddings (frame stacking + MLP).

Stacking k consecutive encoder frames lowers the rate (25 Hz -> 6.25 Hz for k=4) before the language
model reads them, as in the Zipformer+Qwen2 LLM-ASR recipe's `EncoderProjector` (spec
icefall_recipe.md §4): drop the trailing `T % k` frames, reshape `(N, T, C)` to `(N, T // k, k * C)`,
then project to the RWKV width.
"""
from typing import Tuple

import torch
import torch.nn as nn


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
