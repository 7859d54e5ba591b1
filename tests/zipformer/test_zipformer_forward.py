"""Zipformer encoder forward: output lengths, padding invariance, chunk-causal masks, eval
determinism and training-mode gradients (tiny config; properties don't depend on size)."""
import random

import pytest
import torch

from zipformer_rwkv.zipformer import ctc_loss, encoder_out_length, make_ctc_output, set_batch_count
from zipformer_rwkv.zipformer.scaling import ScheduledFloat
from zipformer_tiny import tiny_encoder

pytestmark = pytest.mark.usefixtures("single_thread")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def model():
    return tiny_encoder()


@pytest.mark.parametrize("t", [9, 10, 11, 12, 15, 16, 17, 38, 101, 257, 1003])
def test_output_length(model, t):
    x = torch.randn(1, t, 80)
    with torch.no_grad():
        y, y_lens = model(x, torch.tensor([t]))
    expect = ((t - 7) // 2 + 1) // 2
    assert y.shape == (1, expect, model.encoder_out_dim)
    assert y_lens.tolist() == [expect] == [encoder_out_length(t)]
    assert torch.isfinite(y).all()


def test_too_short_or_wrong_shape_is_a_clear_error(model):
    with pytest.raises(ValueError, match=">= 9 fbank frames"):
        model(torch.randn(1, 8, 80), torch.tensor([8]))
    with pytest.raises(ValueError, match=r"\(N, T, 80\)"):
        model(torch.randn(1, 50, 40), torch.tensor([50]))


@pytest.mark.parametrize("causal", [False, True])
def test_padding_does_not_change_real_frames(causal):
    m = tiny_encoder(seed=1, causal=causal, chunk_size=(16,), left_context_frames=(32,))
    lens = [203, 150, 97, 64]  # odd/even, each stack sees partial downsampling groups
    feats = [torch.randn(t, 80) for t in lens]
    batch = torch.full((len(lens), max(lens), 80), 7.5)  # loud padding: any leak shows
    for i, f in enumerate(feats):
        batch[i, : f.shape[0]] = f
    with torch.no_grad():
        out, out_lens = m(batch, torch.tensor(lens))
        for i, f in enumerate(feats):
            alone, alone_len = m(f.unsqueeze(0), torch.tensor([f.shape[0]]))
            n = int(alone_len)
            assert int(out_lens[i]) == n
            assert rel_err(out[i, :n], alone[0]) <= 1e-5


def test_utterance_cmn_removes_each_utterances_mean_and_keeps_padding():
    from zipformer_rwkv.zipformer.encoder import utterance_cmn

    x = torch.randn(3, 20, 80, dtype=torch.float64) + torch.randn(3, 1, 80, dtype=torch.float64) * 5
    lens = torch.tensor([20, 13, 9])
    x[1, 13:], x[2, 9:] = 7.5, -23.0  # padding
    y = utterance_cmn(x, lens)
    for i, n in enumerate(lens.tolist()):
        assert y[i, :n].mean(dim=0).abs().max() <= 1e-12
        assert torch.allclose(y[i, :n], x[i, :n] - x[i, :n].mean(dim=0))
        assert torch.equal(y[i, n:], x[i, n:])


def test_utterance_cmn_makes_the_encoder_ignore_a_constant_offset():
    """A per-utterance offset of every fbank frame (a gain / channel change) leaves the output
    unchanged with utterance_cmn, and changes it without (so the test can fail); padding still does
    not leak."""
    x = torch.randn(2, 120, 80)
    lens = torch.tensor([120, 77])
    offset = torch.randn(2, 1, 80) * 2 - 1.5
    for cmn in (True, False):
        m = tiny_encoder(seed=3, utterance_cmn=cmn)
        with torch.no_grad():
            out, out_lens = m(x, lens)
            shifted, _ = m(x + offset, lens)
            alone, n = m(x[1:, :77], lens[1:])
        n = int(n)
        assert rel_err(out[1, :n], alone[0]) <= 1e-5
        if cmn:
            assert rel_err(shifted, out) <= 1e-5
        else:
            assert rel_err(shifted, out) > 1e-2


def test_running_cmn_is_causal_in_pieces_and_keeps_padding():
    """Frame t minus the mean of frames 0..t; the same in pieces (RunningCmn, the streaming form);
    a later frame never changes an earlier one; padding passes through; a constant offset cancels."""
    from zipformer_rwkv.zipformer.encoder import RunningCmn, running_cmn

    x = torch.randn(2, 30, 80) + 4.0
    lens = torch.tensor([30, 17])
    x[1, 17:] = -23.0
    y = running_cmn(x, lens)
    for t in (0, 5, 29):
        assert torch.allclose(y[0, t], x[0, t] - x[0, : t + 1].mean(dim=0), atol=1e-5)
    assert torch.equal(y[1, 17:], x[1, 17:])
    cmn = RunningCmn(80)
    pieces = torch.cat([cmn(x[0, a:b]) for a, b in [(0, 7), (7, 7), (7, 20), (20, 30)]])
    assert torch.allclose(pieces, y[0], atol=1e-6)
    assert torch.allclose(running_cmn(x + torch.randn(2, 1, 80), lens)[0], y[0], atol=1e-4)
    changed = x.clone()
    changed[0, 20:] += 5.0
    assert torch.equal(running_cmn(changed, lens)[0, :20], y[0, :20])
    with pytest.raises(ValueError, match="choose one fbank normalisation"):
        tiny_encoder(running_cmn=True, utterance_cmn=True)


def test_utterance_cmn_is_not_for_causal_models():
    with pytest.raises(ValueError, match="--utterance-cmn needs the whole utterance"):
        tiny_encoder(causal=True, utterance_cmn=True)


def test_chunk_mask_makes_output_causal():
    """With chunk-causal masking, frames of earlier chunks ignore later input entirely."""
    m = tiny_encoder(seed=2, causal=True, chunk_size=(16,), left_context_frames=(32,))
    x = torch.randn(1, 2 * 16 * 4 + 13, 80)  # 4 chunks of 16 embed frames (+3 look-ahead)
    x2 = x.clone()
    x2[:, 2 * 16 * 2 + 13:] += 3.0  # change input after chunk 2's look-ahead
    with torch.no_grad():
        y, _ = m(x, torch.tensor([x.shape[1]]))
        y2, _ = m(x2, torch.tensor([x.shape[1]]))
    assert torch.equal(y[:, :16], y2[:, :16])  # chunks 0, 1 at 25 Hz: 8 frames each
    assert not torch.allclose(y[:, 16:], y2[:, 16:])
    # the non-causal model does look ahead
    m.encoder.causal = False
    with torch.no_grad():
        y3, _ = m(x2, torch.tensor([x.shape[1]]))
    assert not torch.allclose(y3[:, :16], y2[:, :16])


def test_eval_is_deterministic_and_train_is_not(model):
    x = torch.randn(2, 120, 80)
    lens = torch.tensor([120, 100])
    set_batch_count(model, 1000)
    with torch.no_grad():
        a, _ = model(x, lens)
        b, _ = model(x, lens)
    assert torch.equal(a, b)
    # eval with grad-requiring input: balancers/whiten stay identities (the autograd path
    # differs from the in-place no-grad path only by float rounding)
    c, _ = model(x.clone().requires_grad_(True), lens)
    assert rel_err(c.detach(), a) < 1e-6
    model.train()
    try:
        with torch.no_grad():
            d, _ = model(x, lens)
        assert not torch.allclose(a, d)  # dropout / skips act in training
    finally:
        model.eval()
        set_batch_count(model, None)


def test_set_batch_count_drives_schedules(model):
    skip = model.encoder.encoders[0].layers[0].bypass.skip_rate
    assert isinstance(skip, ScheduledFloat)
    model.train()
    try:
        set_batch_count(model, None)
        assert float(skip) == skip.default == 0.0
        set_batch_count(model, 0)
        assert float(skip) == pytest.approx(0.5)  # initial_layerdrop_rate
        set_batch_count(model, 1e6)
        assert float(skip) == pytest.approx(0.035)  # final rate, ds=1
        dropout = model.encoder_embed.dropout.p
        assert float(dropout) == pytest.approx(0.1)
        set_batch_count(model, 10000)
        assert float(dropout) == pytest.approx(0.2)
    finally:
        model.eval()
        set_batch_count(model, None)
    assert float(skip) == 0.0  # eval: default


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_reach_every_trained_parameter(causal):
    m = tiny_encoder(seed=3, causal=causal, chunk_size=(16, 32, -1), left_context_frames=(32, -1))
    head = make_ctc_output(m.encoder_out_dim, 20)
    m.train()
    head.train()
    random.seed(0)
    torch.manual_seed(0)
    # make Balancer/Whiten fire on every call so their backward paths run too
    for mod in m.modules():
        if hasattr(mod, "min_prob"):
            mod.min_prob = mod.max_prob = mod.prob = 1.0
        elif hasattr(mod, "min_positive"):
            mod.prob = ScheduledFloat((0.0, 1.0), default=1.0)
    set_batch_count(m, 50000)  # schedules active (late-training values)
    x = torch.randn(3, 180, 80)
    lens = torch.tensor([180, 150, 120])
    out, out_lens = m(x, lens)
    loss = ctc_loss(head(out), out_lens, [[1, 2, 3], [4, 5], [6, 7, 8, 9]])
    loss.backward()
    assert torch.isfinite(loss)
    no_grad = []
    for name, p in m.named_parameters():
        legacy = name.endswith("bypass_scale") and ".bypass." not in name and "bypass_mid" not in name \
            and "out_combiner" not in name
        if legacy:  # icefall's unused layer-level `bypass_scale` ("TODO: remove it")
            assert p.grad is None
            continue
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0:
            no_grad.append(name)
    assert not no_grad, no_grad
