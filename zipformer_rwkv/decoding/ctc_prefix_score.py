"""CTC prefix scores for joint CTC / decoder beam search (batched, exact, in log space).

The prefix probability of a label sequence h under CTC (Watanabe et al., "Hybrid CTC/Attention
Architecture for End-to-End Speech Recognition", IEEE JSTSP 2017, Algorithm 2) is computed from two
forward variables of the prefix g it extends, over encoder frames t = 0..T-1:

  gamma_n[t](h), gamma_b[t](h): probability of h on frames 0..t, ending in a non-blank / blank frame
  phi[t]   = gamma_b[t](g) + (gamma_n[t](g) if last(g) != c else 0)          for h = g + c
  gamma_n[t](h) = (gamma_n[t-1](h) + phi[t-1]) * y[t, c],   gamma_n[0](h) = y[0, c] if g is empty
  gamma_b[t](h) = (gamma_b[t-1](h) + gamma_n[t-1](h)) * y[t, blank]
  psi(h) = gamma_n[0](h) + sum_{t>=1} phi[t-1] * y[t, c]        (the prefix probability)
  p(g ends here) = gamma_n[T-1](g) + gamma_b[T-1](g)             (the score of EOS after g)

Both recursions are first-order linear, so they are solved for all t at once with `logcumsumexp`
on cumulative sums of log y, in float64 (no Python loop over frames):
  gamma_n[t](h) = X[t] + logcumsumexp_{s<=t}(phi'[s] - X[s-1]),   X = cumsum log y[., c], X[-1] = 0
where phi'[s] = phi[s-1] (phi'[0] = log 1 for the empty prefix, else log 0); likewise gamma_b
with log y[., blank].

Candidates: a row scores only `pre_beam` tokens exactly, chosen by an upper bound of psi valid for
every token at once, sum_t gamma(g)[t-1] * y[t, c] (exact unless c = last(g)); it is one batched
matrix product, so the pre-beam uses the CTC evidence even when the decoder's own top tokens miss
the word.
"""
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor

NEG_INF = float("-inf")


@dataclass
class CtcPrefixState:
    """CTC forward variables of R prefixes (one per hypothesis row of a beam search).

    Attributes:
      utt: (R,) int64 utterance index of each row.
      gamma: (R, T, 2) float64 log gamma_n, log gamma_b of the prefix on every frame.
      psi: (R,) float64 log prefix probability (0 for the empty prefix).
      last: (R,) int64 last token of the prefix, -1 when empty.
    """

    utt: Tensor
    gamma: Tensor
    psi: Tensor
    last: Tensor


@dataclass
class CtcCandidates:
    """Exact CTC scores of K candidate tokens per row, as returned by `CtcPrefixScorer.score`.

    Attributes:
      tokens: (R, K) int64 candidate token ids.
      delta: (R, K) float64 log psi(g + c) - log psi(g) (<= 0).
      eos_delta: (R,) float64 log p(g is the whole output) - log psi(g) (<= 0).
      gamma: (R, K, T, 2) forward variables of every candidate prefix (for `select`).
    """

    tokens: Tensor
    delta: Tensor
    eos_delta: Tensor
    gamma: Tensor


class CtcPrefixScorer:
    """Scores extensions of partial hypotheses with CTC prefix probabilities.

    Args:
      log_probs: (N, T, V) CTC log-posteriors (log-softmax over V, blank included) of N utterances,
        frames at the encoder's rate (25 Hz for Zipformer2).
      lengths: (N,) valid frames per utterance (>= 1).
      blank: the blank id (0 in this recipe).
      eos_id: the decoder's end-of-sequence id; never a candidate token (its score is `eos_delta`).
      pre_beam: K, candidate tokens scored exactly per row (clamped to V - 2).
    Raises:
      ValueError: shapes disagree, a length is outside 1..T, or eos_id / blank is out of range.
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor, blank: int = 0, eos_id: int = 1,
                 pre_beam: int = 8):
        if log_probs.ndim != 3 or lengths.shape != (log_probs.size(0),):
            raise ValueError(f"CtcPrefixScorer: log_probs {tuple(log_probs.shape)} must be (N, T, V) "
                             f"and lengths {tuple(lengths.shape)} (N,)")
        _, t, v = log_probs.shape
        if int(lengths.min()) < 1 or int(lengths.max()) > t:
            raise ValueError(f"CtcPrefixScorer: lengths must lie in 1..{t}, got {lengths.tolist()}")
        if not (0 <= blank < v and 0 <= eos_id < v and blank != eos_id):
            raise ValueError(f"CtcPrefixScorer: blank {blank} and eos_id {eos_id} must be distinct ids < {v}")
        self.blank, self.eos_id = blank, eos_id
        self.pre_beam = max(1, min(pre_beam, v - 2))
        self.lengths = lengths.to(log_probs.device, torch.int64)
        self.valid = torch.arange(t, device=log_probs.device) < self.lengths.unsqueeze(1)  # (N, T)
        self.log_probs = log_probs.double()  # (N, T, V)
        self.blank_log_probs = torch.where(self.valid, self.log_probs[:, :, blank], 0.0)  # (N, T)
        # For the candidate bound: probabilities, zero on padded frames; blank and EOS never proposed.
        probs = log_probs.float().exp() * self.valid.unsqueeze(-1)
        probs[:, :, blank] = 0.0
        probs[:, :, eos_id] = 0.0
        self.probs = probs
        self.set_horizon(self.lengths)

    def set_horizon(self, frames: Tensor) -> None:
        """Score prefixes over the first `frames` frames of each utterance only (chunk-by-chunk
        decoding, `interleave.generate_interleaved`): the prefix probability sums over t < frames,
        and EOS scores the prefix as everything spoken in frames 0..frames-1. The forward variables
        are causal, so states stay valid when the horizon moves. The default is `lengths`.

        Args:
          frames: (N,) int64 in 1..lengths.
        Raises:
          ValueError: a horizon outside 1..lengths.
        """
        frames = frames.to(self.lengths.device, torch.int64)
        if frames.shape != self.lengths.shape or bool((frames < 1).any() | (frames > self.lengths).any()):
            raise ValueError(f"CtcPrefixScorer: horizon {frames.tolist()} must lie in 1..lengths "
                             f"{self.lengths.tolist()}")
        self.horizon = frames
        self.until = torch.arange(self.valid.size(1), device=frames.device) < frames.unsqueeze(1)  # (N, T)

    def initial_state(self) -> CtcPrefixState:
        """The empty prefix for every utterance: gamma_n = 0 (log: -inf), gamma_b = prod of blanks."""
        n = self.log_probs.size(0)
        blank_cum = self.blank_log_probs.cumsum(dim=1)
        gamma = torch.stack([torch.full_like(blank_cum, NEG_INF), blank_cum], dim=-1)
        dev = self.log_probs.device
        return CtcPrefixState(
            utt=torch.arange(n, device=dev), gamma=gamma,
            psi=torch.zeros(n, dtype=torch.float64, device=dev),
            last=torch.full((n,), -1, dtype=torch.int64, device=dev),
        )

    def _shifted_total(self, state: CtcPrefixState) -> Tensor:
        """(R, T) log gamma(g)[t-1] (gamma_n + gamma_b), with log 1 at t = 0 for the empty prefix."""
        total = torch.logaddexp(state.gamma[..., 0], state.gamma[..., 1])
        first = torch.where(state.last < 0, 0.0, NEG_INF).to(total).unsqueeze(1)
        return torch.cat([first, total[:, :-1]], dim=1)

    def candidates(self, state: CtcPrefixState, prior: Optional[Tensor] = None,
                   weight: float = 1.0) -> Tensor:
        """(R, K) token ids with the largest `weight * log bound(psi(g + c)) + prior[c]`.

        Args:
          prior: optional (R, V) decoder scores added to the ranking (already weighted).
        """
        shifted = self._shifted_total(state).masked_fill(~self.until[state.utt], NEG_INF)  # (R, T)
        peak = shifted.max(dim=1, keepdim=True).values.clamp(min=-1e30)
        scaled = (shifted - peak).exp().float().unsqueeze(1)  # (R, 1, T)
        bound = torch.bmm(scaled, self.probs[state.utt]).squeeze(1)  # (R, V)
        rank = weight * (bound.double().log() + peak)
        if prior is not None:
            rank = rank + prior.double()
        rank = rank.nan_to_num(nan=-1e300, neginf=-1e300)  # impossible tokens still rank above
        rank[:, self.blank] = NEG_INF  # blank and EOS, which are never candidates
        rank[:, self.eos_id] = NEG_INF
        return rank.topk(self.pre_beam, dim=1).indices

    def score(self, state: CtcPrefixState, tokens: Tensor) -> CtcCandidates:
        """Exact CTC prefix scores of g + c for every row g and candidate c = tokens[row, k].

        Args:
          tokens: (R, K) int64 candidate ids (never blank or EOS).
        """
        r, k = tokens.shape
        t = self.log_probs.size(1)
        valid = self.valid[state.utt].unsqueeze(-1)  # (R, T, 1)
        frames = torch.arange(t, device=tokens.device).view(1, t, 1)
        x = self.log_probs[state.utt.view(r, 1, 1), frames, tokens.view(r, 1, k)]  # (R, T, K)
        x = torch.where(valid, x, 0.0)  # padded frames: log 1, never counted (masks below)
        blank = self.blank_log_probs[state.utt].unsqueeze(-1)  # (R, T, 1), log 1 on padded frames
        gn, gb = state.gamma[..., 0].unsqueeze(-1), state.gamma[..., 1].unsqueeze(-1)  # (R, T, 1)
        repeat = (tokens == state.last.unsqueeze(1)).unsqueeze(1)  # (R, 1, K)
        phi = torch.where(repeat, gb, torch.logaddexp(gn, gb))  # (R, T, K)
        first = torch.where(state.last < 0, 0.0, NEG_INF).to(phi).view(r, 1, 1).expand(r, 1, k)
        phi_prev = torch.cat([first, phi[:, :-1]], dim=1)  # phi'[t] = phi[t-1]
        # psi(h) = sum over t < horizon of phi'[t] * y[t, c]
        until = self.until[state.utt].unsqueeze(-1)
        psi = torch.where(until, phi_prev + x, NEG_INF).logsumexp(dim=1)  # (R, K)
        # gamma_n[t] = X[t] + logcumsumexp_{s<=t}(phi'[s] - X[s-1])
        cum_x = x.cumsum(dim=1)
        prev_x = torch.cat([torch.zeros_like(cum_x[:, :1]), cum_x[:, :-1]], dim=1)
        new_n = cum_x + torch.logcumsumexp(phi_prev - prev_x, dim=1)
        # gamma_b[t] = B[t] + logcumsumexp_{s<=t-1}(gamma_n[s] - B[s]),  gamma_b[0] = 0 (log: -inf)
        cum_b = blank.cumsum(dim=1)
        acc = torch.logcumsumexp(new_n - cum_b, dim=1)
        new_b = cum_b + torch.cat([torch.full_like(acc[:, :1], NEG_INF), acc[:, :-1]], dim=1)
        gamma = torch.stack([new_n, new_b], dim=-1).transpose(1, 2)  # (R, K, T, 2)
        # EOS: gamma(g) on the last frame of the horizon.
        last_frame = (self.horizon[state.utt] - 1).view(r, 1, 1).expand(r, 1, 2)
        end = torch.gather(state.gamma, 1, last_frame).squeeze(1).logsumexp(dim=-1)  # (R,)
        psi_g = state.psi.unsqueeze(1)
        return CtcCandidates(tokens=tokens, delta=(psi - psi_g).nan_to_num(nan=NEG_INF),
                             eos_delta=(end - state.psi).nan_to_num(nan=NEG_INF), gamma=gamma)

    @staticmethod
    def select_rows(state: CtcPrefixState, rows: Tensor) -> CtcPrefixState:
        """The prefixes in rows `rows` (R',) int64 of `state` (gather; may repeat or drop rows)."""
        return CtcPrefixState(utt=state.utt[rows], gamma=state.gamma[rows], psi=state.psi[rows], last=state.last[rows])

    @staticmethod
    def select(state: CtcPrefixState, cands: CtcCandidates, rows: Tensor, cols: Tensor) -> CtcPrefixState:
        """The state of the prefixes g + c chosen by the search.

        Args:
          rows: (R',) int64 row of g in `state`; cols: (R',) int64 index k of c in `cands.tokens`.
        """
        return CtcPrefixState(
            utt=state.utt[rows], gamma=cands.gamma[rows, cols],
            psi=state.psi[rows] + cands.delta[rows, cols], last=cands.tokens[rows, cols],
        )


    def extend(self, state: CtcPrefixState, tokens: List[List[int]]) -> CtcPrefixState:
        """The states of the prefixes g + tokens[row] (tokens already chosen, e.g. a chunk's text).

        Args:
          state: R prefixes; tokens: R lists of ids (never blank or EOS; may be empty).
        Returns:
          R states. `psi` accumulates as in `select`, under the current horizon, so only score
          differences between candidates of one prefix carry over to a later horizon; the tokens
          must fit in the horizon (else psi is -inf).
        Raises:
          ValueError: len(tokens) != R.
        """
        if len(tokens) != state.utt.numel():
            raise ValueError(f"CtcPrefixScorer.extend: {len(tokens)} token lists for {state.utt.numel()} prefixes")
        gamma, psi, last = state.gamma.clone(), state.psi.clone(), state.last.clone()
        dev = gamma.device
        for j in range(max((len(t) for t in tokens), default=0)):
            rows = torch.tensor([r for r, t in enumerate(tokens) if len(t) > j], dtype=torch.long, device=dev)
            cand = torch.tensor([[t[j]] for t in tokens if len(t) > j], dtype=torch.long, device=dev)
            sub = CtcPrefixState(utt=state.utt[rows], gamma=gamma[rows], psi=psi[rows], last=last[rows])
            scored = self.score(sub, cand)
            gamma[rows] = scored.gamma[:, 0]
            psi[rows] = psi[rows] + scored.delta[:, 0]
            last[rows] = cand[:, 0]
        return CtcPrefixState(utt=state.utt, gamma=gamma, psi=psi, last=last)
