"""Chunk-interleaved audio and text for the speech LLM (`--interleave-chunk-frames`).

The encoder output is cut into chunks of `chunk_frames` frames (25 Hz: 16 frames = 0.64 s). RWKV-7
reads a chunk's audio positions, writes the text spoken in that chunk, closes it with EOS, then
reads the next chunk (SpeechLLM-XL, arXiv 2410.03752; `prompt.assemble_interleaved` has the
layout). The recurrent state then carries at most one chunk of audio before it writes, instead
of the whole utterance, and decoding can start before the audio ends (the streaming issue).

Training needs to know which chunk each transcript token was spoken in: the CTC head's forced
alignment gives each token its first frame (`ctc_align.ctc_forced_align`), so the CTC head must
predict RWKV-7's vocabulary. Each audio position belongs to the chunk of its first frame.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from zipformer_rwkv.decoding.ctc_prefix_score import CtcPrefixScorer
from zipformer_rwkv.decoding.search import Hypothesis, search
from zipformer_rwkv.speechllm.adapter import ctc_compress
from zipformer_rwkv.speechllm.ctc_align import ctc_forced_align, tokens_per_chunk


def position_frames(audio_lens: Tensor, num_positions: int, enc_lens: Tensor, ctc_log_probs: Optional[Tensor],
                    adapter_type: str, downsample: int = 4, blank_threshold: float = 0.95,
                   chunk_frames: int = 0) -> Tensor:
    """The first encoder frame of each adapter output position.

    Args:
      audio_lens: (N,) int64 valid adapter positions per row; num_positions: A, the padded width.
      enc_lens: (N,) int64 valid encoder frames; ctc_log_probs: (N, T, V) (the "ctc" adapter's input).
      adapter_type: "stack" (position j covers frames [j k, (j + 1) k)) or "ctc" (a position is a
        `ctc_compress` segment: its first kept frame; segments cut at multiples of `chunk_frames`
        as the adapter cuts them).
    Returns:
      (N, A) int64 frame indices, -1 past each row's `audio_lens`.
    """
    n = audio_lens.numel()
    device = audio_lens.device
    out = torch.full((n, num_positions), -1, dtype=torch.long, device=device)
    if adapter_type == "stack":
        j = torch.arange(num_positions, device=device).unsqueeze(0).expand(n, -1)
        return torch.where(j < audio_lens.unsqueeze(1), j * downsample, out)
    keep, segment, _ = ctc_compress(ctc_log_probs, enc_lens, blank_threshold, chunk_frames=chunk_frames)
    prev = F.pad(segment[:, :-1], (1, 0), value=-1)
    rows, cols = ((segment >= 0) & (segment != prev)).nonzero(as_tuple=True)
    out[rows, segment[rows, cols]] = cols
    return out


def audio_chunks(audio_frames: Tensor, enc_lens: Tensor, chunk_frames: int) -> Tuple[Tensor, Tensor]:
    """The chunk of each adapter position and the number of chunks per row.

    Args:
      audio_frames: (N, A) from `position_frames`; enc_lens: (N,) int64 encoder frames.
      chunk_frames: encoder frames per chunk (> 0).
    Returns:
      audio_chunk (N, A) int64 (-1 on padding) and num_chunks (N,) = ceil(frames / chunk_frames), >= 1.
    Raises:
      ValueError: chunk_frames <= 0.
    """
    if chunk_frames <= 0:
        raise ValueError(f"--interleave-chunk-frames must be > 0, got {chunk_frames}")
    audio_chunk = torch.where(audio_frames >= 0, audio_frames // chunk_frames, audio_frames)
    return audio_chunk, ((enc_lens + chunk_frames - 1) // chunk_frames).clamp(min=1)


def text_chunks(ctc_log_probs: Tensor, enc_lens: Tensor, texts: List[List[int]], num_chunks: Tensor,
                chunk_frames: int) -> List[List[int]]:
    """The chunk each transcript token was spoken in: the chunk of its first frame on the CTC
    forced alignment; a transcript with no alignment (more tokens than frames) goes to the last
    chunk.

    Args:
      ctc_log_probs: (N, T, V) CTC head over RWKV-7's vocabulary (read without gradient).
      enc_lens: (N,) int64; texts: transcript ids per row (no blank); num_chunks: (N,) from `audio_chunks`.
    Returns:
      per row, one chunk index per token (non-decreasing, < num_chunks).
    """
    ali = ctc_forced_align(ctc_log_probs.detach(), enc_lens, texts)
    out = []
    for r, y in enumerate(texts):
        if torch.isfinite(ali.scores[r]):
            per_chunk = tokens_per_chunk(ali.token_frames[r, :len(y)], chunk_frames, int(enc_lens[r]))
            out.append([k for k, tokens in enumerate(per_chunk) for _ in tokens])
        else:
            out.append([int(num_chunks[r]) - 1] * len(y))
    return out


def chunk_cap(written: int, max_tokens_per_chunk: int, max_new_tokens: Optional[int]) -> int:
    """Tokens the next chunk may write: `max_tokens_per_chunk`, or fewer when only that many of
    `max_new_tokens` (None: no total limit) are left after the `written` ones (>= 1 while any are)."""
    if max_new_tokens is None:
        return max_tokens_per_chunk
    return min(max_tokens_per_chunk, max_new_tokens - written)


def decode_chunk(llm, eos_id: int, prefix: Tensor, infix: Tensor, state, prev_texts: Sequence[Optional[List[int]]],
                 audio: Sequence[Tensor], caps: Sequence[int], method: str = "greedy_search", beam_size: int = 4,
                 ctc: Optional[CtcPrefixScorer] = None, ctc_weight: float = 0.0, ctc_state=None):
    """One chunk of N rows, the step both the batch (`generate_interleaved`) and the streaming
    (`streaming.StreamingSpeechLLM`) decoders take: one right-padded pass of RWKV-7 reads each row's
    previous chunk's text and its EOS (for a first chunk: the prompt prefix), then the chunk's audio
    positions and the infix, the layout `prompt.assemble_interleaved` trains on; then `search`
    writes the chunk's text up to its EOS.

    Args:
      llm: the RWKV-7 (`emb`, `forward_features`, `logits`, `step`, `reorder_state`).
      eos_id: the end-of-chunk / end-of-text token. prefix (P, C), infix (I, C): the template's
        embedded prefix and infix.
      state: the N rows' RWKV-7 state (None before a first chunk).
      prev_texts: per row, the previous chunk's tokens, or None for the row's first chunk.
      audio: per row, (A_i, C) adapter outputs of the chunk (A_i may be 0).
      caps: per row, the most tokens the chunk may write (`chunk_cap`).
      method, beam_size, ctc, ctc_weight, ctc_state: as `search`.
    Returns:
      (N best hypotheses of the chunk, the state after reading, before the search).
    """
    device = infix.device
    pieces = []
    for text, a in zip(prev_texts, audio):
        head = prefix if text is None else llm.emb(torch.tensor(text + [eos_id], dtype=torch.long, device=device))
        pieces.append(torch.cat([head, a.to(infix.dtype), infix]))
    lengths = torch.tensor([p.size(0) for p in pieces], device=device)
    last, state = llm.forward_features(inputs_embeds=pad_sequence(pieces, batch_first=True), lengths=lengths,
                                       state=state, last_only=True)
    best = search(llm.logits(last), state, llm.step, llm.reorder_state, eos_id, list(caps), method, beam_size,
                  ctc, ctc_weight, ctc_state)
    return best, state


@torch.no_grad()
def generate_interleaved(llm, template, audio: Tensor, audio_chunk: Tensor, num_chunks: Tensor,
                         method: str = "greedy_search", beam_size: int = 4, max_tokens_per_chunk: int = 32,
                         ctc: Optional[CtcPrefixScorer] = None, ctc_weight: float = 0.0,
                         chunk_frames: int = 0, max_new_tokens: Optional[int] = None) -> List[Hypothesis]:
    """Decode chunk by chunk, all utterances of the batch together, carrying RWKV-7's state.

    For each chunk (`decode_chunk`): read every row's previous chunk's text and EOS (the prefix
    before the first chunk), the chunk's audio positions and the infix in one right-padded parallel
    pass, then search for the chunk's text up to EOS (greedy, or a beam within the chunk of which
    the best hypothesis is kept). A row's last chunk's EOS ends its transcript; rows with fewer
    chunks leave the batch. Padding never reaches the state (`forward_features(lengths=...)`), so a
    batch decodes as its utterances one by one.

    Joint CTC / RWKV-7 search per chunk (`ctc`, `ctc_weight` > 0; greedy = a beam of 1): chunk k
    scores prefixes on frames [0, (k + 1) * chunk_frames) only (`CtcPrefixScorer.set_horizon`), so
    its EOS means "all the text whose first frame lies in the chunk" as in training (`text_chunks`).

    Args:
      llm: the RWKV-7 (`forward_features`, `logits`, `step`, `reorder_state`, `emb`).
      template: the model's `PromptTemplate`.
      audio: (N, A, C) adapter outputs; audio_chunk (N, A), num_chunks (N,) from `audio_chunks`.
      method: "greedy_search" or "beam_search".
      max_tokens_per_chunk: at most this many tokens before a chunk's EOS; a chunk that reaches it
        is closed with EOS and the next chunk follows.
      ctc: a CTC prefix scorer over the same N utterances (encoder frames, RWKV-7's vocabulary), or None.
      ctc_weight: lambda of the joint search, in (0, 1] with `ctc`.
      chunk_frames: encoder frames per chunk (needed with `ctc`).
      max_new_tokens: at most this many tokens per utterance over all its chunks (None: no limit
        but the per-chunk one); a row that reaches it before its last chunk's EOS stops there.
    Returns:
      one `Hypothesis` per utterance (all chunks' tokens; score = sum of the kept chunk scores;
      `truncated` when it stopped at `max_new_tokens`).
    Raises:
      ValueError: `ctc` without chunk_frames > 0; max_new_tokens or max_tokens_per_chunk < 1.
    """
    if ctc is not None and chunk_frames <= 0:
        raise ValueError("joint CTC decoding of an interleaved model needs chunk_frames > 0")
    if max_tokens_per_chunk < 1 or (max_new_tokens is not None and max_new_tokens < 1):
        raise ValueError(f"max_tokens_per_chunk and max_new_tokens must be >= 1, got {max_tokens_per_chunk} "
                         f"and {max_new_tokens}")
    device = audio.device
    eos = template.eos_id
    n = audio.size(0)
    hyps = [Hypothesis() for _ in range(n)]
    prefix = llm.emb(torch.tensor(template.prefix, dtype=torch.long, device=device))
    infix = llm.emb(torch.tensor(template.infix, dtype=torch.long, device=device))
    active = list(range(n))  # utterance of each state row
    texts: List[Optional[List[int]]] = [None] * n  # each active row's previous chunk's text
    state, ctc_state = None, (ctc.initial_state() if ctc is not None else None)
    for k in range(int(num_chunks.max())):
        caps = [chunk_cap(len(hyps[r].tokens), max_tokens_per_chunk, max_new_tokens) for r in active]
        if ctc is not None:
            ctc.set_horizon(torch.clamp(ctc.lengths, max=(k + 1) * chunk_frames))
        pieces = [audio[r, audio_chunk[r] == k] for r in active]
        best, state = decode_chunk(llm, eos, prefix, infix, state, texts, pieces, caps, method, beam_size, ctc,
                                   ctc_weight, ctc_state)
        for r, h in zip(active, best):
            hyps[r].tokens.extend(h.tokens)
            hyps[r].score += h.score
            more = int(num_chunks[r]) > k + 1
            # out of tokens with text possibly left: cut inside this chunk, or chunks still to come
            spent = max_new_tokens is not None and len(hyps[r].tokens) >= max_new_tokens
            hyps[r].truncated = spent and (h.truncated or more)
        keep = [i for i, r in enumerate(active) if int(num_chunks[r]) > k + 1 and not hyps[r].truncated]
        if not keep:
            break
        # the continuing rows read their chunk's text and its EOS with the next chunk's audio
        index = torch.tensor(keep, dtype=torch.long, device=device)
        state = llm.reorder_state(state, index)
        texts = [best[i].tokens for i in keep]
        if ctc is not None:
            ctc_state = ctc.extend(CtcPrefixScorer.select_rows(ctc_state, index), texts)
        active = [active[i] for i in keep]
    return hyps
