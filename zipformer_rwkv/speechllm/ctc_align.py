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

import numpy as np
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
      log_probs: (N, T, V) log-softmax output of a CTC head, any float dtype and device (the
        recursion runs in float32 numpy on the CPU, over the T frames, vectorised over N and the
        2U+1 states; results come back on log_probs' device).
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
    ext = np.full((n, s_max), blank, dtype=np.int64)
    u_lens = np.array([len(y) for y in targets], dtype=np.int64)
    for i, y in enumerate(targets):
        if y:
            ext[i, 1:2 * len(y):2] = y
    lens_np = lens.detach().cpu().numpy().astype(np.int64)
    s_idx = np.arange(s_max)
    valid_state = s_idx[None, :] < (2 * u_lens + 1)[:, None]  # (N, S)
    prev2 = np.concatenate([np.full((n, 2), -1, dtype=np.int64), ext], axis=1)[:, :s_max]
    can_skip = (ext != blank) & (ext != prev2) & (s_idx[None, :] >= 2)

    # The recursion runs in numpy on the CPU: a frame is a dozen elementwise ops on (N, S), and
    # numpy's per-op overhead is ~10x smaller than torch's (bench/bench_ctc_align.py).
    lp = log_probs.detach().float().cpu().numpy()
    emit = np.take_along_axis(lp, ext[:, None, :], axis=2).transpose(1, 0, 2)  # (T, N, S)
    active = np.arange(t_max)[:, None] < lens_np[None, :]  # (T, N)
    emit = np.where(valid_state[None], emit, NEG_INF)
    emit[~active] = 0.0  # past a sequence's end: stay, add nothing (delta unchanged)
    closed = np.where(active, 0.0, NEG_INF).astype(np.float32)[:, :, None]  # (T, N, 1): no step/skip
    skip_pen = np.where(can_skip, 0.0, NEG_INF).astype(np.float32)
    # delta with two -inf columns in front: the step and skip predecessors are shifted views
    delta = np.full((n, s_max + 2), NEG_INF, dtype=np.float32)
    delta[:, 2:4] = emit[0, :, :2]
    delta[:, 2:] = np.where(valid_state, delta[:, 2:], NEG_INF)
    back = np.zeros((t_max, n, s_max), dtype=np.int8)  # 0 stay, 1 step, 2 skip
    for t in range(1, t_max):
        stay = delta[:, 2:]
        step = delta[:, 1:-1] + closed[t]
        skip = delta[:, :-2] + skip_pen + closed[t]
        take_step = step > stay  # ties keep the first of (stay, step, skip)
        best = np.where(take_step, step, stay)
        take_skip = skip > best
        np.copyto(best, skip, where=take_skip)
        arg = back[t]
        arg[take_step] = 1
        arg[take_skip] = 2
        delta[:, 2:] = best + emit[t]
    delta = delta[:, 2:]

    # best final state: S_n - 1 (trailing blank) or S_n - 2 (last token)
    rows = np.arange(n)
    last = 2 * u_lens
    end_blank = delta[rows, last]
    end_token = np.where(u_lens > 0, delta[rows, np.maximum(last - 1, 0)], NEG_INF)
    scores = np.maximum(end_blank, end_token)
    state = np.where(end_token > end_blank, last - 1, last)
    scores = np.where(lens_np > 0, scores, NEG_INF)

    labels = np.full((n, t_max), -1, dtype=np.int64)
    token_frames = np.full((n, u_max), -1, dtype=np.int64)
    ok = np.isfinite(scores)
    for t in range(t_max - 1, -1, -1):
        here = ok & active[t]
        labels[here, t] = ext[rows[here], state[here]]
        is_token = here & (state % 2 == 1)
        # walking backwards, the last write for a token is its first frame
        token_frames[rows[is_token], state[is_token] // 2] = t
        if t > 0:
            state = np.where(here, state - back[t, rows, state], state)
    return CtcAlignment(labels=torch.from_numpy(labels).to(device),
                        token_frames=torch.from_numpy(token_frames).to(device),
                        scores=torch.from_numpy(scores.astype(np.float32)).to(device))


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
