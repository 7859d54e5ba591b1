"""SpeechLLM / LmModel / CtcModel behaviour: prompt layout, loss masks, PEFT modes, frozen modules,
recurrent generation. Uses a tiny convolutional stand-in encoder (the model only needs
`forward(x, x_lens) -> (out, out_lens)` and `encoder_out_dim`)."""
import pytest
import torch
import torch.nn as nn

from tiny_models import EOS, TinyEncoder, V, batch, make_llm, make_speech_llm
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.speechllm.model import CtcModel, LmModel, apply_llm_peft
from zipformer_rwkv.speechllm.prompt import IGNORE_ID, PromptTemplate, assemble


def test_assemble_layout_and_targets():
    t = PromptTemplate(prefix=[5, 6], infix=[7], eos_id=EOS)
    audio = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3) + 100
    audio_lens = torch.tensor([4, 2])
    emb = nn.Embedding(V, 3)
    texts = [[10, 11], [12, 13, 14]]
    embeds, lengths, targets = assemble(audio, audio_lens, t, emb, texts)
    assert lengths.tolist() == [2 + 4 + 1 + 2, 2 + 2 + 1 + 3]
    # row 1: prefix, its 2 audio frames, infix, text: contiguous, padding only at the end
    assert torch.equal(embeds[1, 2:4], audio[1, :2])
    assert torch.equal(embeds[1, :2], emb.weight[[5, 6]])
    assert torch.equal(embeds[1, 4], emb.weight[7])
    assert torch.equal(embeds[1, 5:8], emb.weight[[12, 13, 14]])
    assert torch.all(embeds[1, 8:] == 0)
    # targets: the infix position predicts the first text token; EOS after the last one
    assert targets[0].tolist() == [IGNORE_ID] * 6 + [10, 11, EOS]
    assert targets[1].tolist() == [IGNORE_ID] * 4 + [12, 13, 14, EOS, IGNORE_ID]


def test_template_from_string():
    def enc(s):
        return [ord(c) for c in s]

    t = PromptTemplate.from_string("ab<audio>c<eos>", enc, eos_id=0)
    assert (t.prefix, t.infix) == ([97, 98], [99, 0])
    with pytest.raises(ValueError, match="exactly once"):
        PromptTemplate.from_string("no audio", enc, eos_id=0)


def test_loss_is_mean_ce_over_transcript_and_eos_only():
    model = make_speech_llm().eval()
    feats, lens, texts = batch()
    loss, stats = model(feats, lens, texts)
    assert stats["frames"] == sum(len(t) + 1 for t in texts)
    # Reference: each utterance alone, CE over its transcript+EOS positions only.
    total = 0.0
    for i in range(3):
        audio, alens, _, _, _ = model.encode(feats[i : i + 1, : lens[i]], lens[i : i + 1])
        ids_pre, ids_post = [5, 6], [7] + texts[i]
        x = torch.cat([model.llm.emb.weight[ids_pre], audio[0], model.llm.emb.weight[ids_post]])
        logits = model.llm(inputs_embeds=x.unsqueeze(0))[0]
        k = len(texts[i]) + 1
        target = torch.tensor(texts[i] + [EOS])
        total += float(nn.functional.cross_entropy(logits.detach()[-k:], target, reduction="sum"))
    assert abs(float(loss) * stats["frames"] - total) < 1e-3 * total


def test_padding_does_not_change_loss():
    """Padding a batch (longer neighbours) never changes an utterance's loss: no padding inside."""
    model = make_speech_llm().eval()
    feats, lens, texts = batch()
    _, s_all = model(feats, lens, texts)
    ce_single = sum(model(feats[i : i + 1, : lens[i]], lens[i : i + 1], texts[i : i + 1])[1]["ce_loss"]
                    for i in range(3))
    assert abs(s_all["ce_loss"] - ce_single) < 1e-3 * ce_single


def _changed(before, model):
    now = dict(model.named_parameters())
    return {n for n, p in before.items() if not torch.equal(p, now[n].detach())}


@pytest.mark.parametrize("peft", ["none", "lora", "state", "lora+state"])
def test_peft_modes_train_exactly_their_parameters(peft):
    model = make_speech_llm()
    model.freeze("encoder")
    apply_llm_peft(model.llm, peft, lora_r=4, lora_alpha=8)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    adapter = {n for n in names if n.startswith("adapter.")}
    assert adapter == {n for n, _ in model.adapter.named_parameters(prefix="adapter")}
    llm_names = names - adapter
    if peft == "none":
        assert llm_names == {n for n, _ in model.llm.named_parameters(prefix="llm")}
    else:
        lora = {n for n in llm_names if ".lora_" in n}
        state = {n for n in llm_names if n.endswith(".time_state")}
        assert llm_names == lora | state
        assert bool(lora) == ("lora" in peft) and bool(state) == ("state" in peft)
        if "lora" in peft:  # 6 targets x 2 matrices x 2 layers
            assert len(lora) == 24 and all(".att." in n or ".ffn." in n for n in lora)
        if "state" in peft:
            assert len(state) == 2
    assert not any(n.startswith("encoder.") for n in names)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    feats, lens, texts = batch()
    for _ in range(2):
        model.train()
        loss, _ = model(feats, lens, texts)
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = _changed(before, model)
    # frozen parameters do not change; trainable ones do (LoRA B starts at zero, A moves on step 2)
    assert changed <= names
    assert changed == names, sorted(names - changed)[:5]


def test_frozen_encoder_stays_in_eval_mode():
    model = make_speech_llm()
    model.freeze("encoder")
    model.train()
    assert model.adapter.training and model.llm.training
    assert not model.encoder.training and not model.encoder.dropout.training
    model.eval()
    model.train()  # e.g. after validation
    assert not model.encoder.training
    feats, lens, texts = batch()
    l1, _ = model(feats, lens, texts)
    l2, _ = model(feats, lens, texts)
    assert torch.equal(l1, l2)  # no dropout noise from the frozen encoder


def test_recurrent_generation_equals_rerunning_prefix():
    model = make_speech_llm().eval()
    feats, lens, _ = batch()
    hyps = model.generate(feats, lens, DecodingOptions("greedy_search", max_new_tokens=6))
    for i, h in enumerate(hyps):
        audio, _, _, _, _ = model.encode(feats[i : i + 1, : lens[i]], lens[i : i + 1])
        prompt = torch.cat([model.llm.emb.weight[[5, 6]], audio[0], model.llm.emb.weight[[7]]])
        tokens = list(h.tokens)
        for j in range(len(tokens) + (0 if h.truncated else 1)):
            x = torch.cat([prompt, model.llm.emb.weight[tokens[:j]]]).unsqueeze(0)
            with torch.no_grad():
                nxt = int(model.llm(inputs_embeds=x)[0, -1].argmax())
            assert nxt == (tokens[j] if j < len(tokens) else EOS)
    beam1 = model.generate(feats, lens, DecodingOptions("beam_search", beam_size=1, max_new_tokens=6))
    assert [h.tokens for h in beam1] == [h.tokens for h in hyps]


def test_joint_ctc_generation_follows_the_ctc_head():
    """--ctc-weight: a CTC head that puts every frame on token 9 makes the joint search output [9]
    (greedy and beam), whatever the random RWKV-7 prefers; without a head, or with a head over
    another vocabulary, generate() names the problem."""
    feats, lens, _ = batch()
    with pytest.raises(ValueError, match="--ctc-loss-scale > 0"):
        make_speech_llm().eval().generate(feats, lens, DecodingOptions("greedy_search", ctc_weight=0.5))
    with pytest.raises(ValueError, match="one vocabulary"):
        make_speech_llm(ctc_vocab_size=V + 1, ctc_loss_scale=0.3).eval().generate(
            feats, lens, DecodingOptions(ctc_weight=0.5))
    model = make_speech_llm(ctc_vocab_size=V, ctc_loss_scale=0.3).eval()
    with pytest.raises(ValueError, match="must be in"):
        model.generate(feats, lens, DecodingOptions("beam_search", ctc_weight=-0.5))
    plain = model.generate(feats, lens, DecodingOptions("greedy_search", max_new_tokens=6))
    assert any(h.tokens != [9] for h in plain)
    with torch.no_grad():
        model.ctc_output[1].weight.zero_()
        model.ctc_output[1].bias.fill_(-20.0)
        model.ctc_output[1].bias[9] = 20.0
    for method, beam in [("greedy_search", 1), ("beam_search", 3)]:
        for weight in (0.5, 1.0):
            hyps = model.generate(feats, lens, DecodingOptions(method, beam, weight, max_new_tokens=6))
            assert [h.tokens for h in hyps] == [[9]] * 3


def test_lm_model_predicts_tokens_then_eos():
    llm = make_llm()
    lm = LmModel(llm, eos_id=EOS).eval()
    tokens = torch.tensor([[3, 4, 5], [6, 7, 0]])
    lengths = torch.tensor([3, 2])
    loss, stats = lm(tokens, lengths)
    assert stats["frames"] == 3 + 1 + 2 + 1
    ref = 0.0
    for row, n in zip(tokens.tolist(), lengths.tolist()):
        logits = llm(torch.tensor([[EOS] + row[:n]]))[0]
        ref += float(nn.functional.cross_entropy(logits, torch.tensor(row[:n] + [EOS]), reduction="sum"))
    assert abs(float(loss) * stats["frames"] - ref) < 1e-4 * ref


def test_ctc_model_loss_and_greedy():
    torch.manual_seed(0)
    model = CtcModel(TinyEncoder(), vocab_size=V).eval()
    feats, lens, texts = batch()
    loss, stats = model(feats, lens, texts)
    assert stats["frames"] == float((lens // 4).sum()) and torch.isfinite(loss)
    hyps = model.decode(feats, lens)
    assert len(hyps) == 3 and all(0 not in h for h in hyps)


class _FramesEncoder(nn.Module):
    """Returns fixed 25 Hz frames: one-hot rows of the given per-frame token ids (16 dims)."""

    encoder_out_dim = 16

    def __init__(self, paths, lens):
        super().__init__()
        self.out = nn.functional.one_hot(torch.tensor(paths), 16).float()
        self.lens = torch.tensor(lens)

    def forward(self, x, x_lens):
        return self.out, self.lens


def test_ctc_model_greedy_collapses_repeats_drops_blanks_and_padding():
    # Frame-level best paths (blank = 0); the CTC head maps one-hot frame k to a peak at token k, so
    # the greedy result is known by hand: repeats merge unless a blank separates them, blanks go,
    # frames past each utterance's length are ignored.
    paths = [[0, 3, 3, 0, 3, 5, 5, 0],
             [7, 0, 0, 7, 9, 9, 9, 9],  # 4 valid frames, then padding holding token 9
             [0, 0, 0, 0, 0, 0, 2, 2]]  # all blank within its 6 frames
    model = CtcModel(_FramesEncoder(paths, [8, 4, 6]), vocab_size=V).eval()
    with torch.no_grad():
        linear = model.ctc_output[1]
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[:16, :16] = 10 * torch.eye(16)
    hyps = model.decode(torch.zeros(3, 32, 80), torch.tensor([32, 16, 24]))
    assert hyps == [[3, 3, 5], [7, 7], []]
