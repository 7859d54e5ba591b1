"""Greedy and beam search over a recurrent language model's state (batched).

The searches only see two callables, so they work for any recurrent decoder (RWKV-7 here):

  step_fn(tokens: LongTensor (B,), state) -> (logits (B, V), new_state)
  reorder_fn(state, index: LongTensor (B',)) -> state with rows `index` (gather, may repeat/drop)

Both start from the logits and state left by the prefill of the prompt (audio + separator tokens),
i.e. `first_logits` already predict the first output token. Scores are sums of log-probabilities;
no length normalisation, so a beam of 1 is exactly greedy search.
"""
import argparse
from dataclasses import dataclass, field, fields
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from zipformer_rwkv.decoding.ctc_prefix_score import CtcPrefixScorer, CtcPrefixState

StepFn = Callable[[torch.Tensor, Any], Tuple[torch.Tensor, Any]]
ReorderFn = Callable[[Any, torch.Tensor], Any]


DECODING_METHODS = ("greedy_search", "beam_search")


@dataclass(frozen=True)
class DecodingOptions:
    """How a trained model decodes (decode.py, transcribe.py, bench/bench_decode.py and
    `SpeechLLM.generate`); each field is also the command-line option `--field-name`
    (`add_arguments`), with the same default.

    A ctc model reads none of them (CTC greedy search whatever the method) and refuses a
    `ctc_weight` other than 0 (`recipe.recognize`).

    Raises:
      ValueError: an unknown decoding_method, beam_size < 1, max_new_tokens < 1, or ctc_weight
        outside [0, 1].
    """

    decoding_method: str = field(default="greedy_search", metadata=dict(
        choices=DECODING_METHODS, help="llm: search over the RWKV-7 state; ctc: greedy_search = CTC greedy"))
    beam_size: int = field(default=4, metadata=dict(help="beam_search: beam width"))
    ctc_weight: float = field(default=0.0, metadata=dict(
        help="llm: lambda of joint CTC / RWKV-7 search (needs a model trained with --ctc-loss-scale > 0); "
             "0 = RWKV-7 scores only"))
    max_new_tokens: int = field(default=200, metadata=dict(help="llm: output tokens per utterance"))
    streaming: bool = field(default=False, metadata=dict(help=(
        "llm: decode as a stream (`speechllm/streaming.py`): the causal encoder window by window with its "
        "caches, RWKV-7 chunk by chunk with its carried state (needs --causal and --interleave-chunk-frames; "
        "no --ctc-weight)")))

    def __post_init__(self):
        if self.decoding_method not in DECODING_METHODS:
            raise ValueError(f"unknown decoding method {self.decoding_method!r}; expected greedy_search or "
                             "beam_search")
        for name in ("beam_size", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if isinstance(self.ctc_weight, bool) or not isinstance(self.ctc_weight, (int, float)) \
                or not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"--ctc-weight must be in [0, 1] (0 = off), got {self.ctc_weight!r}")
        object.__setattr__(self, "ctc_weight", float(self.ctc_weight))

    @classmethod
    def add_arguments(cls, parser: Union[argparse.ArgumentParser, "argparse._ArgumentGroup"]) -> None:
        """Add `--decoding-method`, `--beam-size`, `--ctc-weight`, `--max-new-tokens`, `--streaming` (type, default
        and help from the fields; `utils.add_dataclass_arguments`)."""
        from zipformer_rwkv.utils import add_dataclass_arguments

        add_dataclass_arguments(parser, cls)

    @classmethod
    def from_args(cls, args: Union[argparse.Namespace, Mapping[str, Any]]) -> "DecodingOptions":
        """The options of parsed arguments (`add_arguments`), an AttributeDict or a dict; an absent
        field takes its default.

        Raises:
          ValueError: as the constructor.
        """
        get = args.get if isinstance(args, Mapping) else (lambda k, d: getattr(args, k, d))
        return cls(**{f.name: get(f.name, f.default) for f in fields(cls)})


@dataclass
class Hypothesis:
    """One decoding result.

    Attributes:
      tokens: output token ids, without the final EOS.
      score: sum of log-probabilities of `tokens` (and of EOS if it was emitted).
      truncated: True if decoding stopped at `max_new_tokens` without emitting EOS.
    """

    tokens: List[int] = field(default_factory=list)
    score: float = 0.0
    truncated: bool = False


def row_caps(max_new_tokens: Union[int, Sequence[int]], n: int) -> List[int]:
    """`max_new_tokens` as one cap per row: an int for all N rows, or N ints (>= 1 each).

    Raises:
      ValueError: a cap < 1, or a sequence whose length is not N.
    """
    caps = [int(max_new_tokens)] * n if isinstance(max_new_tokens, int) else [int(c) for c in max_new_tokens]
    if len(caps) != n or any(c < 1 for c in caps):
        raise ValueError(f"max_new_tokens must be >= 1 for each of the {n} rows, got {max_new_tokens!r}")
    return caps


def greedy_search(
    first_logits: torch.Tensor,
    state: Any,
    step_fn: StepFn,
    reorder_fn: ReorderFn,
    eos_id: int,
    max_new_tokens: Union[int, Sequence[int]],
) -> List[Hypothesis]:
    """Batched greedy decoding; finished rows are dropped from the state as they end.

    Args:
      first_logits: (N, V) logits for the first output token of each utterance.
      state: recurrent state for the N rows (opaque; handled by `step_fn`/`reorder_fn`).
      eos_id: token that ends a hypothesis (not included in `Hypothesis.tokens`).
      max_new_tokens: at most this many tokens per utterance (EOS not counted): one int, or one
        per row (`row_caps`).
    Returns:
      N hypotheses, in input order.
    Raises:
      ValueError: as `row_caps`.
    """
    n = first_logits.size(0)
    caps = row_caps(max_new_tokens, n)
    hyps = [Hypothesis() for _ in range(n)]
    active = list(range(n))  # utterance index of each state row
    logits = first_logits
    for step in range(max(caps, default=0)):
        logp = logits.float().log_softmax(dim=-1)
        best_logp, best = logp.max(dim=-1)
        keep_rows, next_tokens = [], []
        for row, utt in enumerate(active):
            tok = int(best[row])
            hyps[utt].score += float(best_logp[row])
            if tok == eos_id:
                continue
            hyps[utt].tokens.append(tok)
            if step + 1 == caps[utt]:  # its cap, without EOS
                hyps[utt].truncated = True
                continue
            keep_rows.append(row)
            next_tokens.append(tok)
        if not keep_rows:
            break
        if len(keep_rows) < len(active):
            index = torch.tensor(keep_rows, dtype=torch.long, device=best.device)
            state = reorder_fn(state, index)
            active = [active[r] for r in keep_rows]
        tokens = torch.tensor(next_tokens, dtype=torch.long, device=best.device)
        logits, state = step_fn(tokens, state)
    return hyps


def beam_search(
    first_logits: torch.Tensor,
    state: Any,
    step_fn: StepFn,
    reorder_fn: ReorderFn,
    eos_id: int,
    max_new_tokens: Union[int, Sequence[int]],
    beam_size: int = 4,
    ctc: Optional[CtcPrefixScorer] = None,
    ctc_weight: float = 0.0,
    ctc_state: Optional[CtcPrefixState] = None,
) -> List[Hypothesis]:
    """Batched beam search over the recurrent state (rows reordered with `reorder_fn`).

    Each utterance keeps `beam_size` live hypotheses; a candidate ending in EOS that ranks among
    the top `beam_size` candidates is moved to the finished list. An utterance stops when its best
    finished score is at least its best live score (scores only decrease as tokens are added) or
    after its `max_new_tokens` tokens, in which case the best of finished and live hypotheses wins (a
    live winner is marked `truncated`).

    Joint CTC / decoder search (Watanabe et al., IEEE JSTSP 2017; ESPnet's `ctc_weight`): with
    `ctc` and lambda = `ctc_weight` in (0, 1], a hypothesis h scores
    lambda * log p_ctc(h...) + (1 - lambda) * log p_dec(h), where p_ctc(h...) is the CTC prefix
    probability of h, and the CTC probability of h as the whole output once it ends in EOS. Each
    row then extends only the `ctc.pre_beam` tokens ranked best by that score (with a bound of the
    CTC term; see `ctc_prefix_score.py`).

    Args:
      first_logits: (N, V) logits for the first output token.
      state: recurrent state for the N rows.
      max_new_tokens: one int, or one per row (`row_caps`).
      beam_size: B >= 1; B = 1 gives the same result as `greedy_search` (without `ctc`).
      ctc: CTC prefix scorer over the same N utterances and the same vocabulary, or None.
      ctc_weight: lambda; used only with `ctc`.
      ctc_state: the CTC prefixes the N rows start from (`CtcPrefixScorer.extend`), or None: empty.
    Returns:
      N best hypotheses, in input order (`score` is the joint score when `ctc` is given).
    Raises:
      ValueError: beam_size < 1, ctc_weight outside (0, 1] with a scorer, or bad caps (`row_caps`).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if ctc is not None and not 0.0 < ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in (0, 1] for joint CTC decoding, got {ctc_weight}")
    n = first_logits.size(0)
    caps = row_caps(max_new_tokens, n)
    device = first_logits.device
    finished: List[List[Hypothesis]] = [[] for _ in range(n)]
    # Live beams: one row of the state per (utterance, beam); start with one beam per utterance.
    live: List[List[Hypothesis]] = [[Hypothesis()] for _ in range(n)]
    active = list(range(n))
    if ctc is not None and ctc_state is None:
        ctc_state = ctc.initial_state()
    logits = first_logits
    for step in range(max(caps, default=0)):
        logp = logits.float().log_softmax(dim=-1)  # rows: beams of active utterances, in order
        # Per row: candidate token ids (None: the whole vocabulary) and their score increments.
        if ctc is None:
            cand_tokens, cand_scores = None, logp
        else:
            prior = (1.0 - ctc_weight) * logp
            tokens = ctc.candidates(ctc_state, prior, ctc_weight)
            scored = ctc.score(ctc_state, tokens)
            eos_col = torch.full_like(tokens[:, :1], eos_id)
            cand_tokens = torch.cat([tokens, eos_col], dim=1)
            dec = prior.gather(1, cand_tokens).double()
            cand_scores = dec + ctc_weight * torch.cat([scored.delta, scored.eos_delta.unsqueeze(1)], dim=1)
        width = cand_scores.size(-1)
        row = 0
        new_active, new_live, src_rows, src_cols, next_tokens = [], [], [], [], []
        for utt in active:
            beams = live[utt]
            nb = len(beams)
            base = torch.tensor([h.score for h in beams], device=device, dtype=cand_scores.dtype)
            cand = (base.unsqueeze(1) + cand_scores[row : row + nb]).reshape(-1)
            top_scores, top_idx = cand.topk(min(2 * beam_size, cand.numel()))
            kept: List[Hypothesis] = []
            for rank, (score, idx) in enumerate(zip(top_scores.tolist(), top_idx.tolist())):
                b, col = divmod(idx, width)
                tok = col if cand_tokens is None else int(cand_tokens[row + b, col])
                prev = beams[b]
                if tok == eos_id:
                    if rank < beam_size:  # as in HF beam search: only EOS within the top B counts
                        finished[utt].append(Hypothesis(list(prev.tokens), score))
                elif len(kept) < beam_size:
                    kept.append(Hypothesis(prev.tokens + [tok], score))
                    src_rows.append(row + b)
                    src_cols.append(col)
                    next_tokens.append(tok)
            row += nb
            best_done = max((h.score for h in finished[utt]), default=float("-inf"))
            done = not kept or best_done >= kept[0].score
            if not done and step + 1 < caps[utt]:
                new_active.append(utt)
                new_live.append(kept)
            else:
                live[utt] = [] if done else kept  # at its cap: the live beams compete, truncated
                # Undo the rows queued for an utterance that is done.
                for queued in (src_rows, src_cols, next_tokens):
                    del queued[len(queued) - len(kept) :]
        for utt, kept in zip(new_active, new_live):
            live[utt] = kept
        active = new_active
        if not active:
            break
        index = torch.tensor(src_rows, dtype=torch.long, device=device)
        state = reorder_fn(state, index)
        if ctc is not None:
            cols = torch.tensor(src_cols, dtype=torch.long, device=device)
            ctc_state = ctc.select(ctc_state, scored, index, cols)
        logits, state = step_fn(torch.tensor(next_tokens, dtype=torch.long, device=device), state)
    results = []
    for utt in range(n):
        cands = finished[utt] + [
            Hypothesis(h.tokens, h.score, truncated=True) for h in live[utt]
        ]
        results.append(max(cands, key=lambda h: h.score))
    return results


def search(
    first_logits: torch.Tensor,
    state: Any,
    step_fn: StepFn,
    reorder_fn: ReorderFn,
    eos_id: int,
    max_new_tokens: Union[int, Sequence[int]],
    method: str = "greedy_search",
    beam_size: int = 4,
    ctc: Optional[CtcPrefixScorer] = None,
    ctc_weight: float = 0.0,
    ctc_state: Optional[CtcPrefixState] = None,
) -> List[Hypothesis]:
    """`greedy_search` or `beam_search` by `method` (a `DecodingOptions.decoding_method`); with a
    CTC scorer always the joint `beam_search`, greedy_search being its beam of 1.

    Args and Returns: as `beam_search`.
    Raises:
      ValueError: an unknown method, or as `beam_search`.
    """
    if method not in DECODING_METHODS:
        raise ValueError(f"unknown decoding method {method!r}; expected one of {DECODING_METHODS}")
    if ctc is not None:
        beam = beam_size if method == "beam_search" else 1
        return beam_search(first_logits, state, step_fn, reorder_fn, eos_id, max_new_tokens, beam, ctc, ctc_weight,
                           ctc_state)
    if method == "greedy_search":
        return greedy_search(first_logits, state, step_fn, reorder_fn, eos_id, max_new_tokens)
    return beam_search(first_logits, state, step_fn, reorder_fn, eos_id, max_new_tokens, beam_size)
