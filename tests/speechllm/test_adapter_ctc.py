"""`--adapter-type ctc`: CTC compression (which frames survive, how runs merge) and the
posterior-weighted RWKV-7 embeddings, on hand-made posteriors and through a whole SpeechLLM."""
import math

import pytest
import torch

from tiny_models import EOS, V, batch, make_speech_llm
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.speechllm.adapter import CtcTokenAdapter, ctc_compress, segment_mean

BLANK = 0


def posteriors(rows, vocab=6):
    """Log-posteriors (N, T, vocab) from rows of (label, p(label)) frames; the rest of each frame's
    mass goes to blank (or, for a blank frame, to label 1)."""
    n, t = len(rows), max(len(r) for r in rows)
    p = torch.full((n, t, vocab), 1e-6)
    for i, row in enumerate(rows):
        for j, (label, prob) in enumerate(row):
            p[i, j, label] = prob
            p[i, j, BLANK if label != BLANK else 1] += 1.0 - prob
    p = p / p.sum(-1, keepdim=True)
    return p.log()


def test_compression_drops_blank_frames_and_merges_runs():
    #        0: a    1: a    2: blank .97  3: a    4: b     5: b    6: blank .96  7: c    8: blank .94
    row0 = [(2, .9), (2, .8), (0, .97), (2, .7), (3, .6), (3, .9), (0, .96), (4, .9), (0, .94)]
    row1 = [(0, .99), (5, .9), (5, .9), (0, .99)]
    lp = posteriors([row0, row1])
    lens = torch.tensor([9, 3])  # row 1's last frame is padding
    keep, seg, num = ctc_compress(lp, lens, blank_threshold=0.95)
    # frames 2 and 6 (p(blank) > 0.95) are dropped; frame 8 (0.94 < 0.95) survives as its own
    # segment; the two runs of label 2 split by a dropped frame stay two segments
    assert keep[0].tolist() == [True, True, False, True, True, True, False, True, True]
    assert seg[0].tolist() == [0, 0, -1, 1, 2, 2, -1, 3, 4]
    assert keep[1].tolist() == [False, True, True] + [False] * 6
    assert seg[1].tolist() == [-1, 0, 0] + [-1] * 6
    assert num.tolist() == [5, 1]
    # threshold 1.0 keeps every frame; padding is never kept
    keep, _, num = ctc_compress(lp, lens, blank_threshold=1.0)
    assert keep[0].all() and keep[1].tolist() == [True, True, True] + [False] * 6
    with pytest.raises(ValueError, match="blank threshold"):
        ctc_compress(lp, lens, blank_threshold=0.0)


def test_chunk_frames_cut_runs_at_chunk_starts():
    """With chunk interleaving a segment never reads a frame of the next chunk: the run of label 3
    over frames 4-5 is cut at frame 5 (chunk_frames 5), the run of label 2 over 0-1 is not."""
    row0 = [(2, .9), (2, .8), (0, .97), (2, .7), (3, .6), (3, .9), (0, .96), (4, .9), (0, .94)]
    lp = posteriors([row0])
    _, seg, num = ctc_compress(lp, torch.tensor([9]), blank_threshold=0.95, chunk_frames=5)
    assert seg[0].tolist() == [0, 0, -1, 1, 2, 3, -1, 4, 5]
    assert num.tolist() == [6]


def test_posterior_weighted_embeddings_equal_the_explicit_sum():
    torch.manual_seed(0)
    n, t, d = 2, 7, 5
    lp = torch.randn(n, t, V).log_softmax(-1)
    lp[0, 2, BLANK] = 10.0  # one certainly-blank frame
    lp = lp.log_softmax(-1)
    lens = torch.tensor([7, 5])
    emb = torch.randn(V, d)
    adapter = CtcTokenAdapter(encoder_dim=4, llm_dim=d, blank_threshold=0.95)
    out, out_lens = adapter(torch.randn(n, t, 4), lens, lp, emb)
    keep, seg, num = ctc_compress(lp, lens, 0.95)
    assert out_lens.tolist() == num.tolist() and out.shape == (n, int(num.max()), d)
    p = lp.exp().double()
    for i in range(n):
        for s in range(int(num[i])):
            frames = [j for j in range(t) if seg[i, j] == s]
            ref = torch.zeros(d, dtype=torch.float64)
            for j in frames:
                z = sum(float(p[i, j, v]) for v in range(1, V))
                for v in range(1, V):
                    ref += float(p[i, j, v]) / z / len(frames) * emb[v].double()
            assert torch.allclose(out[i, s].double(), ref, atol=1e-5), (i, s)
        assert torch.all(out[i, int(num[i]):] == 0)


def test_segment_mean_of_empty_rows():
    x = torch.ones(2, 3, 4)
    seg = torch.tensor([[-1, -1, -1], [0, 0, 1]])
    out = segment_mean(x, seg, torch.tensor([0, 2]))
    assert out.shape == (2, 2, 4) and torch.all(out[0] == 0) and torch.all(out[1] == 1)


def make_ctc_llm(**kw):
    return make_speech_llm(ctc_vocab_size=V, ctc_loss_scale=0.3, adapter_type="ctc", **kw)


def test_padded_batch_equals_one_by_one():
    model = make_ctc_llm().eval()
    feats, lens, texts = batch()
    audio, audio_lens, *_ = model.encode(feats, lens)
    assert audio_lens.min() > 0
    for i in range(3):
        one, one_len, *_ = model.encode(feats[i : i + 1, : lens[i]], lens[i : i + 1])
        assert int(one_len) == int(audio_lens[i])
        assert torch.allclose(one[0], audio[i, : int(one_len)], atol=1e-6)
    _, s_all = model(feats, lens, texts, texts)
    ce_one = sum(model(feats[i : i + 1, : lens[i]], lens[i : i + 1], texts[i : i + 1], texts[i : i + 1])[1]["ce_loss"]
                 for i in range(3))
    assert math.isclose(s_all["ce_loss"], ce_one, rel_tol=1e-4)


@pytest.mark.parametrize("freeze", [False, True])
def test_gradients_reach_the_ctc_head_and_the_encoder_when_trained(freeze):
    model = make_ctc_llm(adapter_encoder_proj=True)
    if freeze:
        model.freeze("encoder")
    model.train()
    model.ctc_loss_scale = 0.0  # only the LLM's cross-entropy: it must reach the head through the posteriors
    feats, lens, texts = batch()
    loss, _ = model(feats, lens, texts)
    loss.backward()
    assert model.ctc_output[1].weight.grad.abs().sum() > 0
    assert model.llm.emb.weight.grad[1:].abs().sum() > 0
    assert model.adapter.encoder_proj.weight.grad.abs().sum() > 0
    enc_grad = model.encoder.conv.weight.grad
    assert (enc_grad is None) if freeze else (enc_grad.abs().sum() > 0)


def test_encoder_projection_starts_at_zero_and_vocab_must_match():
    feats, lens, _ = batch()
    plain, with_proj = make_ctc_llm().eval(), make_ctc_llm(adapter_encoder_proj=True).eval()
    missing = with_proj.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["adapter.encoder_proj.bias", "adapter.encoder_proj.weight"]
    a, _, *_ = plain.encode(feats, lens)
    b, _, *_ = with_proj.encode(feats, lens)
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="vocabulary"):
        make_speech_llm(ctc_vocab_size=V + 1, ctc_loss_scale=0.3, adapter_type="ctc")
    with pytest.raises(ValueError, match="stack or ctc"):
        make_speech_llm(adapter_type="frames")


def test_generation_reads_the_ctc_head():
    """The LLM input follows the head: a head sure of token 9 on every frame gives one position,
    exactly RWKV-7's embedding of 9; generation runs from it."""
    model = make_ctc_llm().eval()
    with torch.no_grad():
        model.ctc_output[1].weight.zero_()
        model.ctc_output[1].bias.fill_(-30.0)
        model.ctc_output[1].bias[9] = 30.0
    feats, lens, _ = batch()
    audio, audio_lens, *_ = model.encode(feats, lens)
    assert audio_lens.tolist() == [1, 1, 1]
    assert torch.allclose(audio[:, 0], model.llm.emb.weight[9].expand(3, -1), atol=1e-5)
    hyps = model.generate(feats, lens, DecodingOptions("greedy_search", max_new_tokens=4))
    assert len(hyps) == 3 and all(EOS not in h.tokens for h in hyps)
