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
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from zipformer_rwkv.adapter import ctc_compress
from zipformer_rwkv.ctc_align import ctc_forced_align, tokens_per_chunk
from zipformer_rwkv.search import Hypothesis, beam_search, greedy_search


def position_frames(audio_lens: Tensor, num_positions: int, enc_lens: Tensor, ctc_log_probs: Optional[Tensor],
                    adapter_type: str, downsample: int = 4, blank_threshold: float = 0.95) -> Tensor:
    """The first encoder frame of each adapter output position.

    Args:
      audio_lens: (N,) int64 valid adapter positions per row; num_positions: A, the padded width.
      enc_lens: (N,) int64 valid encoder frames; ctc_log_probs: (N, T, V) (the "ctc" adapter's input).
      adapter_type: "stack" (position j covers frames [j k, (j + 1) k)) or "ctc" (a position is a
        `ctc_compress` segment: its first kept frame).
    Returns:
      (N, A) int64 frame indices, -1 past each row's `audio_lens`.
    """
    n = audio_lens.numel()
    device = audio_lens.device
    out = torch.full((n, num_positions), -1, dtype=torch.long, device=device)
    if adapter_type == "stack":
        j = torch.arange(num_positions, device=device).unsqueeze(0).expand(n, -1)
        return torch.where(j < audio_lens.unsqueeze(1), j * downsample, out)
    keep, segment, _ = ctc_compress(ctc_log_probs, enc_lens, blank_threshold)
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


@torch.no_grad()
def generate_interleaved(llm, template, audio: Tensor, audio_chunk: Tensor, num_chunks: Tensor,
                         method: str = "greedy_search", beam_size: int = 4,
                         max_tokens_per_chunk: int = 32) -> List[Hypothesis]:
    """Decode chunk by chunk, one utterance at a time, carrying RWKV-7's state.

    For each chunk: read its audio positions and the infix (the prefix too before the first chunk)
    in one parallel pass, search for the chunk's text up to EOS (greedy, or a beam within the
    chunk of which the best hypothesis is kept), then read that text and the EOS into the state.
    The last chunk's EOS ends the transcript.

    Args:
      llm: the RWKV-7 (`forward_features`, `logits`, `step`, `reorder_state`, `emb`).
      template: the model's `PromptTemplate`.
      audio: (N, A, C) adapter outputs; audio_chunk (N, A), num_chunks (N,) from `audio_chunks`.
      method: "greedy_search" or "beam_search".
      max_tokens_per_chunk: at most this many tokens before a chunk's EOS.
    Returns:
      one `Hypothesis` per utterance (all chunks' tokens; score = sum of the kept chunk scores).
    """
    device = audio.device
    eos = template.eos_id
    hyps = []
    for r in range(audio.size(0)):
        state, hyp = None, Hypothesis()
        for k in range(int(num_chunks[r])):
            ids = template.prefix if k == 0 else []
            pieces = [llm.emb(torch.tensor(ids, dtype=torch.long, device=device)), audio[r, audio_chunk[r] == k],
                      llm.emb(torch.tensor(template.infix, dtype=torch.long, device=device))]
            embeds = torch.cat(pieces).unsqueeze(0)
            last, state = llm.forward_features(inputs_embeds=embeds, state=state, last_only=True)
            logits = llm.logits(last)
            if method == "greedy_search":
                best = greedy_search(logits, state, llm.step, llm.reorder_state, eos, max_tokens_per_chunk)[0]
            else:
                best = beam_search(logits, state, llm.step, llm.reorder_state, eos, max_tokens_per_chunk, beam_size)[0]
            hyp.tokens.extend(best.tokens)
            hyp.score += best.score
            if k < int(num_chunks[r]) - 1:  # read the chunk's text and its EOS before the next audio
                ids = torch.tensor(best.tokens + [eos], dtype=torch.long, device=device).unsqueeze(0)
                _, state = llm.forward_features(ids, state=state, last_only=True)
        hyps.append(hyp)
    return hyps
