"""CTC head, loss and greedy decoding for pre-training / evaluating the encoder on its own.

icefall's AsrModel names the head `ctc_output` = Sequential(Dropout, Linear, LogSoftmax), so its
keys are `ctc_output.1.weight` / `ctc_output.1.bias`; blank id is 0.
"""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def make_ctc_output(encoder_dim: int, vocab_size: int, dropout: float = 0.1) -> nn.Sequential:
    """Sequential(Dropout(p), Linear(encoder_dim, vocab_size), LogSoftmax(-1)):
    (N, T, encoder_dim) -> log-probs (N, T, vocab_size). Hold it as `ctc_output`."""
    return nn.Sequential(nn.Dropout(p=dropout), nn.Linear(encoder_dim, vocab_size),
                         nn.LogSoftmax(dim=-1))


def ctc_loss(log_probs: Tensor, lens: Tensor, targets: Sequence[Sequence[int]],
             blank: int = 0, zero_infinity: bool = False) -> Tensor:
    """Summed CTC loss over the batch (torch.nn.functional.ctc_loss, reduction="sum").

    Args:
      log_probs: (N, T, V) log-softmax output.
      lens: (N,) int64 valid frames of each sequence.
      targets: N token-id lists (no blanks).
    Returns:
      scalar tensor. A sequence too short for its label gives inf (as icefall) unless
      `zero_infinity`.
    Raises:
      ValueError: batch sizes differ or a target contains the blank id.
    """
    if log_probs.ndim != 3 or len(targets) != log_probs.shape[0] or lens.shape != (log_probs.shape[0],):
        raise ValueError(f"ctc_loss: log_probs {tuple(log_probs.shape)}, lens {tuple(lens.shape)} "
                         f"and {len(targets)} targets disagree on the batch size")
    flat = [t for seq in targets for t in seq]
    if blank in flat:
        raise ValueError(f"ctc_loss: targets contain the blank id {blank}")
    target_lens = torch.tensor([len(t) for t in targets], dtype=torch.int64)
    flat_t = torch.tensor(flat, dtype=torch.int64)
    return F.ctc_loss(log_probs.permute(1, 0, 2), flat_t, lens.cpu().to(torch.int64), target_lens,
                      blank=blank, reduction="sum", zero_infinity=zero_infinity)


def ctc_greedy_search(log_probs: Tensor, lens: Tensor, blank: int = 0) -> List[List[int]]:
    """Best path per frame, repeats collapsed, blanks dropped.

    log_probs: (N, T, V); lens: (N,) valid frames. Returns N lists of token ids.
    """
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for n, length in enumerate(lens.tolist()):
        path = best[n, :length]
        if length == 0:
            out.append([])
            continue
        keep = torch.ones_like(path, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        out.append([t for t in path[keep].tolist() if t != blank])
    return out
