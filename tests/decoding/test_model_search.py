"""Greedy and beam search over an abstract recurrent step function (a tiny GRU language model)."""
import itertools

import torch

from zipformer_rwkv.decoding.search import beam_search, greedy_search

V, EOS = 5, 0


class TinyRnnLm(torch.nn.Module):
    def __init__(self, seed: int, sharp: float = 3.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(V, 8, generator=g))
        self.cell = torch.nn.GRUCell(8, 8)
        for p in self.cell.parameters():
            p.data = torch.randn(p.shape, generator=g)
        self.out = torch.nn.Parameter(torch.randn(8, V, generator=g) * sharp)

    def step(self, tokens, state):
        h = self.cell(self.emb[tokens], state)
        return h @ self.out, h


def reorder(state, index):
    return state.index_select(0, index)


def _start(model, n, seed):
    h0 = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
    return h0 @ model.out, h0


@torch.no_grad()
def test_beam_one_equals_greedy():
    for seed in range(5):
        model = TinyRnnLm(seed)
        logits, h0 = _start(model, 6, seed)
        g = greedy_search(logits, h0, model.step, reorder, EOS, max_new_tokens=7)
        b = beam_search(logits, h0, model.step, reorder, EOS, max_new_tokens=7, beam_size=1)
        assert [h.tokens for h in g] == [h.tokens for h in b]
        assert [h.truncated for h in g] == [h.truncated for h in b]
        for hg, hb in zip(g, b):
            assert abs(hg.score - hb.score) < 1e-4


def _seq_score(model, h0, seq):
    """Log-probability of `seq` (tokens, then EOS unless it has max length) from state h0."""
    logits, h = h0 @ model.out, h0
    total = 0.0
    for tok in seq:
        total += float(logits.log_softmax(-1)[0, tok])
        logits, h = model.step(torch.tensor([tok]), h)
    return total, logits


@torch.no_grad()
def test_wide_beam_is_exhaustive():
    """With a beam as large as the number of prefixes, beam search finds the best sequence."""
    max_len = 3
    for seed in range(4):
        model = TinyRnnLm(seed, sharp=1.0)
        logits, h0 = _start(model, 1, 100 + seed)
        best, best_score = None, float("-inf")
        for L in range(max_len + 1):
            for seq in itertools.product(range(1, V), repeat=L):
                s, last = _seq_score(model, h0, list(seq))
                if L < max_len:
                    s += float(last.log_softmax(-1)[0, EOS])
                if s > best_score:
                    best, best_score = list(seq), s
        hyp = beam_search(logits, h0, model.step, reorder, EOS, max_len, beam_size=(V - 1) ** max_len)[0]
        assert hyp.tokens == best
        assert abs(hyp.score - best_score) < 1e-4
        assert hyp.truncated == (len(best) == max_len)


@torch.no_grad()
def test_greedy_matches_unbatched_and_flags_truncation():
    model = TinyRnnLm(3)
    logits, h0 = _start(model, 5, 7)
    batched = greedy_search(logits, h0, model.step, reorder, EOS, max_new_tokens=4)
    for i in range(5):
        single = greedy_search(logits[i : i + 1], h0[i : i + 1], model.step, reorder, EOS, 4)[0]
        assert single.tokens == batched[i].tokens
        assert single.truncated == batched[i].truncated
        assert single.truncated == (len(single.tokens) == 4 and EOS not in single.tokens)
    # Forbid EOS: every hypothesis runs to max_new_tokens and is flagged.
    no_eos = torch.zeros(V)
    no_eos[EOS] = -1e4

    def step(tokens, state):
        logits, state = model.step(tokens, state)
        return logits + no_eos, state

    logits, h0 = _start(model, 3, 8)
    logits = logits + no_eos
    for h in greedy_search(logits, h0, step, reorder, EOS, 3):
        assert h.truncated and len(h.tokens) == 3
    for h in beam_search(logits, h0, step, reorder, EOS, 3, beam_size=3):
        assert h.truncated and len(h.tokens) == 3


@torch.no_grad()
def test_a_cap_per_row_decodes_each_row_as_alone_with_its_cap():
    """`max_new_tokens` as one cap per row (the chunk-interleaved decoder's token budget)."""
    import pytest

    caps = [1, 4, 2, 6, 3]
    for seed in range(3):
        model = TinyRnnLm(seed, sharp=1.0)
        logits, h0 = _start(model, 5, 20 + seed)
        for search, kw in ((greedy_search, {}), (beam_search, dict(beam_size=3))):
            together = search(logits, h0, model.step, reorder, EOS, caps, **kw)
            for i, cap in enumerate(caps):
                alone = search(logits[i:i + 1], h0[i:i + 1], model.step, reorder, EOS, cap, **kw)[0]
                assert (together[i].tokens, together[i].truncated) == (alone.tokens, alone.truncated)
                assert together[i].score == pytest.approx(alone.score, abs=1e-4)
                assert len(alone.tokens) <= cap
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        greedy_search(logits, h0, model.step, reorder, EOS, [1, 2, 0, 1, 1])
    with pytest.raises(ValueError, match="5 rows"):
        beam_search(logits, h0, model.step, reorder, EOS, [1, 2])
