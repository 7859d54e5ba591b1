"""CTC forced alignment: the single best CTC path of a known transcript (batched Viterbi).

Graves et al., "Connectionist Temporal Classification", ICML 2006: a transcript y_1..y_U is
read through the extended sequence l' = (blank, y_1, blank, y_2, ..., y_U, blank) of S = 2U + 1
states. A path visits one state per encoder frame, starts in state 0 or 1, ends in state S-1 or
S-2, and at each frame stays, moves on by one, or skips the blank between two different labels
(s -> s + 2 when l'[s + 2] != blank and l'[s + 2] != l'[s]). The Viterbi recursion keeps the best
log-probability of reaching each state:

  delta[0, s]  = log p(l'[s] | frame 0)                        for s in {0, 1}, else -inf
  delta[t, s]  = max(delta[t-1, s], delta[t-1, s-1], delta[t-1, s-2] if the skip is allowed)
                 + log p(l'[s] | frame t)

and backtracking from the better of the two final states gives the path. Its score equals the
best over all frame-level label sequences that collapse to y (merge repeats, drop blanks); the
tests check this by enumerating them. The streaming speech LLM uses the token frames to cut a
transcript into the chunks of audio it was spoken in (SpeechLLM-XL, arXiv 2410.03752).

Our own implementation: k2 and torchaudio's `forced_align` are not dependencies of this project.
"""
from dataclasses import dataclass
from typing import List, Sequence

import torch
from torch import Tensor

NEG_INF = float("-inf")


@dataclass
class CtcAlignment:
    """Best CTC paths of a batch.

    Attributes:
      labels: (N, T) int64, the label of each frame on the best path (blank or a token id);
        -1 on padding frames (t >= the sequence's length) and for sequences with no path.
      token_frames: (N, U_max) int64, the first frame of each transcript token on the path
        (frames of the encoder output, e.g. 25 Hz); -1 past the transcript's end or with no path.
      scores: (N,) float, log-probability of the best path; -inf when the transcript needs more
        frames than the sequence has (each token one frame, plus one between repeated tokens).
    """

    labels: Tensor
    token_frames: Tensor
    scores: Tensor


def ctc_forced_align(log_probs: Tensor, lens: Tensor, targets: Sequence[Sequence[int]],
                     blank: int = 0) -> CtcAlignment:
    """Viterbi alignment of each transcript to its CTC posteriors, all sequences at once.

    Args:
      log_probs: (N, T, V) log-softmax output of a CTC head, any float dtype (computed in float32
        on its device; the loop runs over the T frames, vectorised over N and the 2U+1 states).
      lens: (N,) int64, valid frames of each sequence (<= T).
      targets: N token-id lists, without blanks (an empty list aligns to all-blank).
      blank: the blank id.
    Returns:
      a `CtcAlignment`.
    Raises:
      ValueError: batch sizes differ, a length is out of range, or a target holds the blank id or
        an id outside [0, V).
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (N, T, V), got shape {tuple(log_probs.shape)}")
    n, t_max, vocab = log_probs.shape
    if len(targets) != n or lens.numel() != n:
        raise ValueError(f"batch sizes differ: log_probs {n}, lens {lens.numel()}, targets {len(targets)}")
    if n and (int(lens.min()) < 0 or int(lens.max()) > t_max):
        raise ValueError(f"lens must be in [0, {t_max}], got {lens.tolist()}")
    for i, y in enumerate(targets):
        bad = [tok for tok in y if tok == blank or not 0 <= tok < vocab]
        if bad:
            raise ValueError(f"target {i} holds ids {bad[:5]} (blank is {blank}, vocabulary size {vocab})")
    device = log_probs.device
    u_max = max((len(y) for y in targets), default=0)
    s_max = 2 * u_max + 1
    # extended label sequences l' (N, S), padded with blank; states past 2U_n are never reached
    ext = torch.full((n, s_max), blank, dtype=torch.long, device=device)
    u_lens = torch.tensor([len(y) for y in targets], dtype=torch.long, device=device)
    for i, y in enumerate(targets):
        if y:
            ext[i, 1:2 * len(y):2] = torch.tensor(list(y), dtype=torch.long, device=device)
    s_idx = torch.arange(s_max, device=device)
    valid_state = s_idx[None, :] < (2 * u_lens + 1)[:, None]  # (N, S)
    prev2 = torch.cat([torch.full((n, 2), -1, dtype=torch.long, device=device), ext[:, :-2]], dim=1)
    can_skip = (ext != blank) & (ext != prev2) & (s_idx[None, :] >= 2)

    lp = log_probs.float()
    emit = lp.gather(2, ext[:, None, :].expand(n, t_max, s_max))  # (N, T, S)
    neg = torch.full((n, s_max), NEG_INF, device=device)
    delta = neg.clone()
    delta[:, :2] = emit[:, 0, :2]
    delta = torch.where(valid_state, delta, neg)
    back = torch.zeros(n, t_max, s_max, dtype=torch.int8, device=device)  # 0 stay, 1 step, 2 skip
    for t in range(1, t_max):
        stay = delta
        step = torch.cat([neg[:, :1], delta[:, :-1]], dim=1)
        skip = torch.where(can_skip, torch.cat([neg[:, :2], delta[:, :-2]], dim=1), neg)
        best, arg = torch.stack([stay, step, skip]).max(dim=0)
        new = torch.where(valid_state, best + emit[:, t], neg)
        active = (t < lens)[:, None]  # frames past a sequence's end leave it unchanged
        delta = torch.where(active, new, delta)
        back[:, t] = torch.where(active, arg.to(torch.int8), back[:, t])

    # best final state: S_n - 1 (trailing blank) or S_n - 2 (last token)
    last = 2 * u_lens
    end_blank = delta.gather(1, last[:, None])[:, 0]
    end_token = delta.gather(1, (last - 1).clamp(min=0)[:, None])[:, 0]
    end_token = torch.where(u_lens > 0, end_token, torch.full_like(end_token, NEG_INF))
    scores = torch.maximum(end_blank, end_token)
    state = torch.where(end_token > end_blank, last - 1, last)
    scores = torch.where(lens > 0, scores, torch.full_like(scores, NEG_INF))

    labels = torch.full((n, t_max), -1, dtype=torch.long, device=device)
    token_frames = torch.full((n, max(u_max, 1)), -1, dtype=torch.long, device=device)[:, :u_max]
    ok = torch.isfinite(scores)
    rows = torch.arange(n, device=device)
    for t in range(t_max - 1, -1, -1):
        here = ok & (t < lens)
        lab = ext[rows, state.clamp(max=s_max - 1)]
        labels[:, t] = torch.where(here, lab, labels[:, t])
        is_token = here & (state % 2 == 1)
        tok_idx = (state // 2).clamp(max=max(u_max - 1, 0))
        if u_max:
            # walking backwards, the last write for a token is its first frame
            token_frames[rows[is_token], tok_idx[is_token]] = t
        if t > 0:
            move = back[rows, t, state.clamp(max=s_max - 1)].long()
            state = torch.where(here, state - move, state)
    return CtcAlignment(labels=labels, token_frames=token_frames, scores=scores)


def tokens_per_chunk(token_frames: Tensor, chunk_frames: int, num_frames: int) -> List[List[int]]:
    """Split one transcript by the chunk its tokens start in.

    Args:
      token_frames: (U,) int64 first frame of each token (`CtcAlignment.token_frames` row, no -1).
      chunk_frames: frames per chunk (> 0).
      num_frames: the sequence's frames (its chunks: ceil(num_frames / chunk_frames)).
    Returns:
      one list of token positions (indices into the transcript, in order) per chunk.
    Raises:
      ValueError: chunk_frames <= 0 or a token frame outside [0, num_frames).
    """
    if chunk_frames <= 0:
        raise ValueError(f"chunk_frames must be > 0, got {chunk_frames}")
    frames = token_frames.tolist()
    if any(not 0 <= f < num_frames for f in frames):
        raise ValueError(f"token frames must be in [0, {num_frames}), got {frames}")
    chunks: List[List[int]] = [[] for _ in range(-(-num_frames // chunk_frames))]
    for u, f in enumerate(frames):
        chunks[f // chunk_frames].append(u)
    return chunks
