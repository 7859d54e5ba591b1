"""CTC prefix scores (zipformer_rwkv/decoding/ctc_prefix_score.py) against brute force over alignments, and
joint CTC / decoder beam search against an exhaustive search.

Tolerances: float64 throughout; the scorer's closed-form recursions (cumsum + logcumsumexp) agree with
summing every alignment path to a relative 1e-9.
"""
import itertools
import math

import pytest
import torch

from zipformer_rwkv.decoding.ctc_prefix_score import CtcPrefixScorer
from zipformer_rwkv.decoding.search import beam_search

BLANK, EOS = 0, 1


def _collapse(path):
    out, prev = [], None
    for c in path:
        if c != prev and c != BLANK:
            out.append(c)
        prev = c
    return tuple(out)


def brute_force(log_probs: torch.Tensor, length: int):
    """{labelling: probability} summed over all V^length alignment paths of one utterance."""
    probs = {}
    v = log_probs.size(-1)
    for path in itertools.product(range(v), repeat=length):
        p = math.exp(sum(float(log_probs[t, c]) for t, c in enumerate(path)))
        key = _collapse(path)
        probs[key] = probs.get(key, 0.0) + p
    return probs


def prefix_prob(table, prefix):
    return sum(p for seq, p in table.items() if seq[: len(prefix)] == tuple(prefix))


def _log_probs(n, t, v, seed, sharp=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, t, v, generator=g, dtype=torch.float64) * sharp).log_softmax(-1)


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("seed", [0, 1])
def test_prefix_and_eos_scores_match_brute_force(seed):
    """Padded batch (lengths 6 and 4), three steps along paths with a repeated token."""
    v = 5
    lp = _log_probs(2, 6, v, seed)
    lengths = torch.tensor([6, 4])
    tables = [brute_force(lp[n], int(lengths[n])) for n in range(2)]
    scorer = CtcPrefixScorer(lp, lengths, blank=BLANK, eos_id=EOS, pre_beam=3)
    state = scorer.initial_state()
    paths = [[2, 2, 3], [4, 2, 4]]
    tokens = torch.tensor([[2, 3, 4], [2, 3, 4]])
    for step in range(3):
        cands = scorer.score(state, tokens)
        for n in range(2):
            g = paths[n][:step]
            assert _rel(math.exp(float(state.psi[n])), prefix_prob(tables[n], g)) < 1e-9
            assert _rel(math.exp(float(state.psi[n] + cands.eos_delta[n])), tables[n].get(tuple(g), 0.0)) < 1e-9
            for k in range(3):
                want = prefix_prob(tables[n], g + [int(tokens[n, k])])
                got = math.exp(float(state.psi[n] + cands.delta[n, k]))
                assert _rel(got, want) < 1e-9 or (want == 0.0 and got == 0.0)
        cols = torch.tensor([[2, 3, 4].index(paths[n][step]) for n in range(2)])
        state = scorer.select(state, cands, torch.arange(2), cols)


def test_whole_sequence_score_matches_ctc_loss_on_a_long_utterance():
    t, v = 37, 9
    lp = _log_probs(1, t, v, seed=5, sharp=1.0)
    seq = [3, 3, 7, 2, 2, 8]
    scorer = CtcPrefixScorer(lp, torch.tensor([t]), blank=BLANK, eos_id=EOS, pre_beam=4)
    state = scorer.initial_state()
    for tok in seq:
        cands = scorer.score(state, torch.tensor([[tok]]))
        state = scorer.select(state, cands, torch.tensor([0]), torch.tensor([0]))
    end = float(state.psi[0] + scorer.score(state, torch.tensor([[4]])).eos_delta[0])
    want = -float(torch.nn.functional.ctc_loss(
        lp[0].unsqueeze(1), torch.tensor([seq]), torch.tensor([t]), torch.tensor([len(seq)]),
        blank=BLANK, reduction="sum"))
    assert abs(end - want) < 1e-9 * abs(want)


def test_candidates_rank_by_the_prefix_score():
    """Empty prefix: the bound is exact, so the pre-beam is the exact top-K. After a step, the exact
    top-K (whatever the repeat rule removes) lies within the bound's top-(K+1)."""
    v, k = 12, 4
    lp = _log_probs(3, 10, v, seed=7)
    lengths = torch.tensor([10, 7, 3])
    scorer = CtcPrefixScorer(lp, lengths, blank=BLANK, eos_id=EOS, pre_beam=k)
    state = scorer.initial_state()
    every = torch.arange(2, v).expand(3, v - 2)
    exact = scorer.score(state, every).delta
    want = every.gather(1, exact.topk(k, dim=1).indices)
    assert torch.equal(scorer.candidates(state).sort(dim=1).values, want.sort(dim=1).values)
    state = scorer.select(state, scorer.score(state, every), torch.arange(3), exact.argmax(dim=1))
    exact = scorer.score(state, every).delta
    top_exact = every.gather(1, exact.topk(k, dim=1).indices)
    wide = CtcPrefixScorer(lp, lengths, blank=BLANK, eos_id=EOS, pre_beam=k + 1).candidates(state)
    for row in range(3):
        assert set(top_exact[row].tolist()) <= set(wide[row].tolist())
    # A decoder prior moves the ranking: a huge prior on token 5 puts it first everywhere.
    prior = torch.zeros(3, v, dtype=torch.float64)
    prior[:, 5] = 1e6
    assert (scorer.candidates(state, prior)[:, 0] == 5).all()


class ToyDecoder:
    """A fixed random bigram 'language model' as a recurrent step function (state = last token)."""

    def __init__(self, v, seed):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(v, v, generator=g, dtype=torch.float64)

    def step(self, tokens, state):
        return self.table[tokens], tokens

    @staticmethod
    def reorder(state, index):
        return state.index_select(0, index)

    def logp(self, prev, tok):
        return float(self.table[prev].log_softmax(-1)[tok])


@pytest.mark.parametrize("weight", [0.3, 0.7, 1.0])
def test_joint_beam_search_is_exhaustive_with_a_wide_beam(weight):
    """Best of weight * log p_ctc(seq) + (1 - weight) * log p_dec(seq, EOS) over every sequence."""
    v, t = 5, 4
    lp = _log_probs(2, t, v, seed=11, sharp=1.5)
    lengths = torch.tensor([4, 3])
    dec = ToyDecoder(v, seed=3)
    start = torch.tensor([0, 0])  # "previous token" of the prompt
    first_logits, _ = dec.step(start, start)
    scorer = CtcPrefixScorer(lp, lengths, blank=BLANK, eos_id=EOS, pre_beam=v)
    tokens = range(2, v)
    beam = len(tokens) ** t
    hyps = beam_search(first_logits, start, dec.step, dec.reorder, EOS, t + 1, beam, scorer, weight)
    for n in range(2):
        table = brute_force(lp[n], int(lengths[n]))
        best, best_score = None, float("-inf")
        for length in range(t + 1):
            for seq in itertools.product(tokens, repeat=length):
                p_ctc = table.get(tuple(seq), 0.0)
                if p_ctc == 0.0:
                    continue
                prev, s_dec = 0, 0.0
                for tok in list(seq) + [EOS]:
                    s_dec += dec.logp(prev, tok)
                    prev = tok
                score = weight * math.log(p_ctc) + (1 - weight) * s_dec
                if score > best_score:
                    best, best_score = list(seq), score
        assert hyps[n].tokens == best
        assert abs(hyps[n].score - best_score) < 1e-6
        assert not hyps[n].truncated


def test_joint_search_follows_a_confident_ctc():
    """A peaky CTC spelling 3 4 4 2 (with a blank between the 4s) wins over a decoder that prefers
    other tokens, at weight 0.9; at weight 1 the decoder is ignored."""
    v, t = 6, 9
    frames = [0, 3, 3, 4, 0, 4, 2, 0, 0]
    lp = torch.full((1, t, v), math.log(0.01 / (v - 1)), dtype=torch.float64)
    for i, c in enumerate(frames):
        lp[0, i, c] = math.log(0.99)
    dec = ToyDecoder(v, seed=0)
    dec.table[:, 5] += 3.0  # the decoder likes token 5
    start = torch.tensor([0])
    first_logits, _ = dec.step(start, start)
    for weight, beam in [(0.9, 1), (0.9, 4), (1.0, 2)]:
        scorer = CtcPrefixScorer(lp, torch.tensor([t]), blank=BLANK, eos_id=EOS, pre_beam=3)
        hyp = beam_search(first_logits, start, dec.step, dec.reorder, EOS, 10, beam, scorer, weight)[0]
        assert hyp.tokens == [3, 4, 4, 2]


def test_bad_arguments():
    lp = _log_probs(2, 5, 4, seed=0)
    with pytest.raises(ValueError, match="lengths must lie in 1..5"):
        CtcPrefixScorer(lp, torch.tensor([5, 0]))
    with pytest.raises(ValueError, match="must be .N, T, V."):
        CtcPrefixScorer(lp[0], torch.tensor([5]))
    with pytest.raises(ValueError, match="distinct"):
        CtcPrefixScorer(lp, torch.tensor([5, 5]), blank=0, eos_id=0)
    scorer = CtcPrefixScorer(lp, torch.tensor([5, 5]))
    logits = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="ctc_weight must be in"):
        beam_search(logits, torch.zeros(2), lambda t, s: (torch.zeros(len(t), 4), s),
                    lambda s, i: s[i], EOS, 3, 2, scorer, 0.0)


def test_horizon_scores_as_the_truncated_utterance():
    """With a horizon H, prefix and EOS scores equal a scorer given only the first H frames, for
    prefixes grown by `extend` at any horizon (the forward variables are causal)."""
    lp = _log_probs(2, 7, 4, seed=3)
    full = CtcPrefixScorer(lp, torch.tensor([7, 6]), blank=BLANK, eos_id=EOS, pre_beam=2)
    prefixes = [[2, 2, 3], [3]]
    full.set_horizon(torch.tensor([4, 2]))  # extending under one horizon, scoring under others
    grown = full.extend(full.initial_state(), prefixes)
    cands = torch.tensor([[2, 3], [2, 3]])
    for h in ([6, 3], [7, 6], [6, 4]):
        full.set_horizon(torch.tensor(h))
        got = full.score(grown, cands)
        for n in range(2):
            cut = CtcPrefixScorer(lp[n:n + 1, :h[n]], torch.tensor([h[n]]), blank=BLANK, eos_id=EOS, pre_beam=2)
            one = cut.extend(cut.initial_state(), prefixes[n:n + 1])
            want = cut.score(one, cands[n:n + 1])
            table = brute_force(lp[n], h[n])  # and against every alignment of the H frames
            g = prefix_prob(table, prefixes[n])
            for k, c in enumerate(cands[n].tolist()):
                ref = math.log(prefix_prob(table, prefixes[n] + [c]) / g)
                # psi is relative to the horizons it was grown under; differences between candidates are not
                assert float(got.delta[n, k] - got.delta[n, 0]) == pytest.approx(
                    float(want.delta[0, k] - want.delta[0, 0]), rel=1e-9, abs=1e-9)
                assert float(want.delta[0, k]) == pytest.approx(ref, rel=1e-9, abs=1e-12)
            end = math.log(table.get(tuple(prefixes[n]), 0.0) / g)
            assert float(want.eos_delta[0]) == pytest.approx(end, rel=1e-9)
            assert float(got.eos_delta[n] - got.delta[n, 0]) == pytest.approx(
                float(want.eos_delta[0] - want.delta[0, 0]), rel=1e-9, abs=1e-9)
    with pytest.raises(ValueError, match="horizon"):
        full.set_horizon(torch.tensor([7, 7]))


def test_extend_equals_score_then_select():
    lp = _log_probs(2, 6, 5, seed=4)
    scorer = CtcPrefixScorer(lp, torch.tensor([6, 5]), blank=BLANK, eos_id=EOS)
    state = scorer.initial_state()
    tokens = [[2, 3, 3], [4]]
    grown = scorer.extend(state, tokens)
    for n, seq in enumerate(tokens):
        one = CtcPrefixScorer.select_rows(state, torch.tensor([n]))
        for c in seq:
            one = scorer.select(one, scorer.score(one, torch.tensor([[c]])), torch.tensor([0]), torch.tensor([0]))
        assert torch.allclose(grown.gamma[n], one.gamma[0]) and grown.last[n] == one.last[0]
        assert float(grown.psi[n]) == pytest.approx(float(one.psi[0]), rel=1e-12)
    with pytest.raises(ValueError, match="token lists"):
        scorer.extend(state, [[2]])
