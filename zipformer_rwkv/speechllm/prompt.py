"""Prompt templates and sequence assembly for the speech LLM.

One training sequence is, per utterance and with no padding inside it:

  [prefix tokens] [audio embeddings (A_i)] [infix tokens] [transcript tokens] -> targets ... [EOS]

The model reads everything up to the last transcript token; the cross-entropy targets are the
transcript tokens and EOS only (every other position is `IGNORE_ID`). Rows are right-padded, so a
recurrent model never reads padding between audio and text (with left padding, the pad positions
would pass through the RWKV state before the real tokens and change it).

Templates are strings with one `<audio>` marker; `<eos>` inserts the tokenizer's EOS id:
  World tokenizer (pretrained G1 models): "User: <audio>\\n\\nAssistant:" and transcript " text"
  BPE tokenizer (models trained from scratch): "<audio><eos>" (EOS doubles as separator)
"""
import re
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import torch

IGNORE_ID = -100
AUDIO_MARK = "<audio>"
EOS_MARK = "<eos>"

DEFAULT_TEMPLATES = {
    "world": ("User: <audio>\n\nAssistant:", " "),
    "bpe": ("<audio><eos>", ""),
}


@dataclass
class PromptTemplate:
    """Token ids around the audio and the EOS that ends a transcript.

    Attributes:
      prefix: token ids before the audio embeddings.
      infix: token ids between the audio and the transcript.
      eos_id: id appended to every transcript (a training target; ends generation).
      text_prefix: string prepended to a transcript before tokenizing (" " for World).
    """

    prefix: List[int]
    infix: List[int]
    eos_id: int
    text_prefix: str = ""
    template: str = field(default="", compare=False)

    @classmethod
    def from_string(
        cls, template: str, encode: Callable[[str], List[int]], eos_id: int, text_prefix: str = ""
    ) -> "PromptTemplate":
        """Parse a template with exactly one `<audio>` marker (and optional `<eos>` markers).

        Raises:
          ValueError: if `<audio>` does not occur exactly once.
        """
        parts = template.split(AUDIO_MARK)
        if len(parts) != 2:
            raise ValueError(
                f"prompt template must contain '{AUDIO_MARK}' exactly once, got {template!r}"
            )

        def tokens(s: str) -> List[int]:
            out: List[int] = []
            for i, piece in enumerate(re.split(re.escape(EOS_MARK), s)):
                if i > 0:
                    out.append(eos_id)
                if piece:
                    out.extend(encode(piece))
            return out

        return cls(tokens(parts[0]), tokens(parts[1]), eos_id, text_prefix, template)

    @classmethod
    def default(cls, tokenizer_kind: str, encode: Callable[[str], List[int]], eos_id: int):
        """The default template for `tokenizer_kind` ("world" or "bpe")."""
        if tokenizer_kind not in DEFAULT_TEMPLATES:
            raise ValueError(f"no default prompt template for tokenizer {tokenizer_kind!r}")
        template, text_prefix = DEFAULT_TEMPLATES[tokenizer_kind]
        return cls.from_string(template, encode, eos_id, text_prefix)

    def encode_text(self, text: str, encode: Callable[[str], List[int]]) -> List[int]:
        """Transcript token ids (without EOS)."""
        return encode(self.text_prefix + text)


def assemble(
    audio: torch.Tensor,
    audio_lens: torch.Tensor,
    template: PromptTemplate,
    embed: Callable[[torch.Tensor], torch.Tensor],
    texts: Optional[List[List[int]]] = None,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Splice audio embeddings into the prompt, right-padded, with targets.

    Args:
      audio: (N, A, C) adapter output.
      audio_lens: (N,) int64, valid audio positions per row.
      template: the prompt template.
      embed: token embedding lookup, LongTensor (N, T) -> (N, T, C).
      texts: transcript token ids per row (without EOS), or None to build the decoding prompt
        (which ends after the infix tokens).
    Returns:
      embeds: (N, T, C) inputs, row i valid for its first lengths[i] positions, zeros after.
      lengths: (N,) int64.
      targets: (N, T) int64 with the id to predict at each position (transcript and EOS), IGNORE_ID
        elsewhere; None when `texts` is None.
    """
    n = audio.size(0)
    device = audio.device
    p, i_len = len(template.prefix), len(template.infix)
    a_lens = audio_lens.tolist()
    t_lens = [len(t) for t in texts] if texts is not None else [0] * n
    lengths = [p + a + i_len + t for a, t in zip(a_lens, t_lens)]
    total = max(lengths)

    ids = torch.zeros(n, total, dtype=torch.long)
    is_audio = torch.zeros(n, total, dtype=torch.bool)
    valid = torch.zeros(n, total, dtype=torch.bool)
    targets = torch.full((n, total), IGNORE_ID, dtype=torch.long) if texts is not None else None
    for r in range(n):
        a = a_lens[r]
        row = template.prefix + [0] * a + template.infix + (texts[r] if texts is not None else [])
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        is_audio[r, p : p + a] = True
        valid[r, : len(row)] = True
        if targets is not None:
            start = p + a + i_len - 1  # the last prompt position predicts the first text token
            tgt = texts[r] + [template.eos_id]
            targets[r, start : start + len(tgt)] = torch.tensor(tgt, dtype=torch.long)

    audio_rows = audio[torch.arange(audio.size(1), device=device).unsqueeze(0) < audio_lens.unsqueeze(1)]
    embeds = _embed_rows(ids.to(device), is_audio.to(device), valid.to(device), audio_rows, embed)
    lengths_t = torch.tensor(lengths, dtype=torch.long, device=device)
    return embeds, lengths_t, (targets.to(device) if targets is not None else None)


def assemble_interleaved(
    audio: torch.Tensor,
    audio_chunk: torch.Tensor,
    num_chunks: torch.Tensor,
    template: PromptTemplate,
    embed: Callable[[torch.Tensor], torch.Tensor],
    texts: List[List[int]],
    text_chunks: List[List[int]],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunk-interleaved training sequences: each chunk's audio, then the text spoken in it.

    Row layout (SpeechLLM-XL, arXiv 2410.03752, with EOS doubling as its end-of-chunk token):

      [prefix] [audio 1] [infix] [text 1] [EOS] [audio 2] [infix] [text 2] [EOS] ... [audio K] [infix] [text K] -> EOS

    Targets are every chunk's text tokens and the EOS that closes it (a chunk with no text still
    predicts its EOS); an EOS inside the row is read as input, so the next chunk's audio follows
    the state that wrote the text before it. With K = 1 this is `assemble`'s sequence.

    Args:
      audio: (N, A, C) adapter output.
      audio_chunk: (N, A) int64, the chunk of each audio position (non-decreasing along a row),
        -1 on padding positions.
      num_chunks: (N,) int64, K per row (>= 1).
      template: the prompt template; its infix must not be empty (the position that predicts a
        chunk's first token).
      embed: token embedding lookup, LongTensor (N, T) -> (N, T, C).
      texts: transcript token ids per row (without EOS).
      text_chunks: per row, the chunk of each transcript token (non-decreasing, in [0, K)).
    Returns:
      embeds (N, T, C) right-padded with zeros, lengths (N,) int64, targets (N, T) int64
      (IGNORE_ID where nothing is predicted).
    Raises:
      ValueError: an empty infix; chunk indices out of range or not in order.
    """
    if not template.infix:
        raise ValueError("chunk interleaving needs a prompt template with tokens after <audio> "
                         "(the position that predicts each chunk's first token)")
    n, device = audio.size(0), audio.device
    eos, infix = template.eos_id, template.infix
    rows: List[Tuple[List[int], List[bool], List[int]]] = []
    for r in range(n):
        k_r = int(num_chunks[r])
        a_chunk = [c for c in audio_chunk[r].tolist() if c >= 0]
        if k_r < 1 or any(c >= k_r for c in a_chunk) or a_chunk != sorted(a_chunk):
            raise ValueError(f"row {r}: audio chunks {a_chunk} do not fit {k_r} chunks in order")
        t_chunk = text_chunks[r]
        if len(t_chunk) != len(texts[r]) or any(not 0 <= c < k_r for c in t_chunk) or t_chunk != sorted(t_chunk):
            raise ValueError(f"row {r}: text chunks {t_chunk} do not fit {k_r} chunks in order")
        ids, is_audio, tgt = list(template.prefix), [False] * len(template.prefix), [IGNORE_ID] * len(template.prefix)
        for k in range(k_r):
            n_a = a_chunk.count(k)
            ids += [0] * n_a + infix
            is_audio += [True] * n_a + [False] * len(infix)
            tgt += [IGNORE_ID] * (n_a + len(infix))
            out = [tok for tok, c in zip(texts[r], t_chunk) if c == k] + [eos]
            tgt[-1] = out[0]
            ids += out[:-1]
            is_audio += [False] * (len(out) - 1)
            tgt += out[1:]
            if k < k_r - 1:  # the chunk's EOS is read before the next chunk's audio
                ids.append(eos)
                is_audio.append(False)
                tgt.append(IGNORE_ID)
        rows.append((ids, is_audio, tgt))
    lengths = [len(ids) for ids, _, _ in rows]
    total = max(lengths)
    ids_t = torch.zeros(n, total, dtype=torch.long)
    audio_mask = torch.zeros(n, total, dtype=torch.bool)
    targets = torch.full((n, total), IGNORE_ID, dtype=torch.long)
    for r, (ids, is_audio, tgt) in enumerate(rows):
        ids_t[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        audio_mask[r, : len(ids)] = torch.tensor(is_audio, dtype=torch.bool)
        targets[r, : len(ids)] = torch.tensor(tgt, dtype=torch.long)
    valid = torch.arange(total).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    embeds = _embed_rows(ids_t.to(device), audio_mask.to(device), valid.to(device), audio[audio_chunk >= 0], embed)
    return embeds, torch.tensor(lengths, dtype=torch.long, device=device), targets.to(device)


def _embed_rows(ids: torch.Tensor, is_audio: torch.Tensor, valid: torch.Tensor, audio_rows: torch.Tensor,
                embed: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(N, T, C) token embeddings of `ids` (N, T) with the audio vectors `audio_rows` (M, C) written,
    in row-major order, at the M positions where `is_audio`; zeros where not `valid`."""
    tok = embed(ids)
    embeds = tok.masked_scatter(is_audio.unsqueeze(-1), audio_rows.to(tok.dtype))
    return embeds * valid.unsqueeze(-1).to(embeds.dtype)
