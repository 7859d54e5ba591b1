"""CTC forced alignment (zipformer_rwkv/speechllm/ctc_align.py) against brute force over all paths."""
import itertools

import pytest
import torch

from zipformer_rwkv.speechllm.ctc_align import ctc_forced_align, tokens_per_chunk


def collapse(path, blank=0):
    out, prev = [], None
    for p in path:
        if p != prev and p != blank:
            out.append(p)
        prev = p
    return out


def brute_force(log_probs, target, blank=0):
    """Best path (score, labels) over every frame-level sequence that collapses to target."""
    t, v = log_probs.shape
    best, best_path = float("-inf"), None
    for path in itertools.product(range(v), repeat=t):
        if collapse(path, blank) == list(target):
            score = sum(float(log_probs[i, p]) for i, p in enumerate(path))
            if score > best:
                best, best_path = score, list(path)
    return best, best_path


def first_frames(path, blank=0):
    frames, prev = [], None
    for i, p in enumerate(path):
        if p != blank and p != prev:
            frames.append(i)
        prev = p
    return frames


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_padded_batch(seed):
    g = torch.Generator().manual_seed(seed)
    v, t_max = 4, 6
    targets = [[1, 2], [3, 3], [2], [], [1, 2, 1], [2, 2, 2]]
    lens = torch.tensor([6, 5, 3, 4, 6, 5])
    log_probs = torch.randn(len(targets), t_max, v, generator=g, dtype=torch.float64).log_softmax(-1)
    ali = ctc_forced_align(log_probs, lens, targets)
    for i, y in enumerate(targets):
        n = int(lens[i])
        score, path = brute_force(log_probs[i, :n], y)
        if path is None:  # [2, 2, 2] needs 5 frames: it has them; nothing here is infeasible
            assert ali.scores[i] == float("-inf")
            continue
        assert float(ali.scores[i]) == pytest.approx(score, abs=1e-5)
        assert ali.labels[i, :n].tolist() == path
        assert (ali.labels[i, n:] == -1).all()
        assert ali.token_frames[i, :len(y)].tolist() == first_frames(path)
        assert (ali.token_frames[i, len(y):] == -1).all()


def test_one_by_one_equals_batch():
    g = torch.Generator().manual_seed(7)
    targets = [[5, 1, 5], [2], [7, 7, 3, 1]]
    lens = torch.tensor([9, 4, 11])
    log_probs = torch.randn(3, 11, 9, generator=g).log_softmax(-1)
    batch = ctc_forced_align(log_probs, lens, targets)
    for i, y in enumerate(targets):
        n = int(lens[i])
        one = ctc_forced_align(log_probs[i:i + 1, :n], lens[i:i + 1], [y])
        assert torch.equal(one.labels[0], batch.labels[i, :n])
        assert torch.equal(one.token_frames[0], batch.token_frames[i, :len(y)])
        assert torch.allclose(one.scores, batch.scores[i:i + 1])


def test_a_batch_of_empty_transcripts_aligns_to_blank():
    """Every target empty (one state, S = 1): the all-blank path, scored as brute force does
    (this shape once crashed the skip transition, which assumed S >= 2)."""
    log_probs = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64).log_softmax(-1)
    lens = torch.tensor([5, 3])
    ali = ctc_forced_align(log_probs, lens, [[], []])
    for i in range(2):
        n = int(lens[i])
        assert ali.labels[i].tolist() == [0] * n + [-1] * (5 - n)
        assert float(ali.scores[i]) == pytest.approx(brute_force(log_probs[i, :n], [])[0], abs=1e-5)  # float32 inside
    assert ali.token_frames.shape == (2, 0)


def test_too_few_frames_has_no_path():
    log_probs = torch.randn(1, 2, 4).log_softmax(-1)
    ali = ctc_forced_align(log_probs, torch.tensor([2]), [[1, 1]])  # needs 1, blank, 1
    assert ali.scores[0] == float("-inf")
    assert (ali.labels == -1).all() and (ali.token_frames == -1).all()


def test_peaked_posteriors_give_the_peaks():
    """A head sure of a frame-level sequence gives exactly that sequence."""
    path = [0, 3, 3, 0, 0, 2, 0, 2, 2, 0]
    log_probs = torch.full((1, len(path), 5), -20.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    ali = ctc_forced_align(log_probs.log_softmax(-1), torch.tensor([len(path)]), [[3, 2, 2]])
    assert ali.labels[0].tolist() == path
    assert ali.token_frames[0].tolist() == [1, 5, 7]


def test_bad_input_is_a_clear_error():
    lp = torch.randn(2, 5, 4).log_softmax(-1)
    with pytest.raises(ValueError, match="blank"):
        ctc_forced_align(lp, torch.tensor([5, 5]), [[1], [0, 2]])
    with pytest.raises(ValueError, match="vocabulary size 4"):
        ctc_forced_align(lp, torch.tensor([5, 5]), [[1], [4]])
    with pytest.raises(ValueError, match="batch sizes differ"):
        ctc_forced_align(lp, torch.tensor([5, 5]), [[1]])
    with pytest.raises(ValueError, match="lens must be"):
        ctc_forced_align(lp, torch.tensor([5, 6]), [[1], [2]])


def test_tokens_per_chunk():
    assert tokens_per_chunk(torch.tensor([0, 3, 4, 9]), 4, 10) == [[0, 1], [2], [3]]
    assert tokens_per_chunk(torch.tensor([], dtype=torch.long), 4, 5) == [[], []]
    with pytest.raises(ValueError, match="token frames"):
        tokens_per_chunk(torch.tensor([10]), 4, 10)
