"""Chunk-interleaved audio and text (`--interleave-chunk-frames`): the sequence layout, the chunk of
each audio position and transcript token, and decoding that carries the state as training reads it."""
import pytest
import torch
from torch import nn

from test_adapter_ctc import posteriors
from tiny_models import EOS, V, batch, make_speech_llm
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.speechllm.interleave import audio_chunks, generate_interleaved, position_frames, text_chunks
from zipformer_rwkv.speechllm.prompt import IGNORE_ID, PromptTemplate, assemble, assemble_interleaved

T = PromptTemplate(prefix=[5, 6], infix=[7], eos_id=EOS)


def test_layout_and_targets():
    audio = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3) + 100
    audio_chunk = torch.tensor([[0, 0, 1, 2], [1, -1, -1, -1]])
    num_chunks = torch.tensor([3, 2])
    emb = nn.Embedding(V, 3)
    texts, t_chunks = [[10, 11, 12], [13]], [[0, 0, 2], [1]]
    embeds, lengths, targets = assemble_interleaved(audio, audio_chunk, num_chunks, T, emb, texts, t_chunks)
    A = None  # an audio position
    row0 = [5, 6, A, A, 7, 10, 11, EOS, A, 7, EOS, A, 7, 12]
    row1 = [5, 6, 7, EOS, A, 7, 13]
    tgt0 = [IGNORE_ID] * 4 + [10, 11, EOS, IGNORE_ID, IGNORE_ID, EOS, IGNORE_ID, IGNORE_ID, 12, EOS]
    tgt1 = [IGNORE_ID] * 2 + [EOS, IGNORE_ID, IGNORE_ID, 13, EOS]
    assert lengths.tolist() == [len(row0), len(row1)]
    for r, (row, tgt, audio_rows) in enumerate([(row0, tgt0, audio[0]), (row1, tgt1, audio[1, :1])]):
        assert targets[r, : len(tgt)].tolist() == tgt
        assert (targets[r, len(tgt):] == IGNORE_ID).all()
        a = iter(audio_rows)
        for i, tok in enumerate(row):
            want = next(a) if tok is None else emb.weight[tok]
            assert torch.equal(embeds[r, i], want)
        assert (embeds[r, len(row):] == 0).all()


def test_one_chunk_is_the_whole_utterance_sequence():
    audio = torch.randn(2, 5, 3)
    audio_lens = torch.tensor([5, 3])
    emb = nn.Embedding(V, 3)
    texts = [[10, 11], [12, 13, 14]]
    chunk = torch.where(torch.arange(5) < audio_lens[:, None], 0, -1)
    a = assemble(audio, audio_lens, T, emb, texts)
    b = assemble_interleaved(audio, chunk, torch.tensor([1, 1]), T, emb, texts, [[0, 0], [0, 0, 0]])
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_bad_chunks_are_clear_errors():
    audio, emb = torch.randn(1, 2, 3), nn.Embedding(V, 3)
    with pytest.raises(ValueError, match="text chunks"):
        assemble_interleaved(audio, torch.tensor([[0, 1]]), torch.tensor([2]), T, emb, [[10, 11]], [[1, 0]])
    with pytest.raises(ValueError, match="audio chunks"):
        assemble_interleaved(audio, torch.tensor([[0, 2]]), torch.tensor([2]), T, emb, [[10]], [[0]])
    with pytest.raises(ValueError, match="after <audio>"):
        assemble_interleaved(audio, torch.tensor([[0, 0]]), torch.tensor([1]), PromptTemplate([5], [], EOS), emb,
                             [[10]], [[0]])


def test_positions_and_tokens_go_to_the_chunk_they_start_in():
    # frames: blank, 2 2, blank, 3, blank, blank | 4 4, blank   (chunk = 4 frames)
    row = [(0, .99), (2, .9), (2, .9), (0, .99), (3, .9), (0, .99), (0, .99), (4, .9), (4, .9), (0, .99)]
    lp = posteriors([row])
    lens = torch.tensor([10])
    frames = position_frames(torch.tensor([3]), 3, lens, lp, "ctc", blank_threshold=0.95)
    assert frames.tolist() == [[1, 4, 7]]
    chunk, num = audio_chunks(frames, lens, 4)
    assert chunk.tolist() == [[0, 1, 1]] and num.tolist() == [3]
    assert text_chunks(lp, lens, [[2, 3, 4]], num, 4) == [[0, 1, 1]]
    # stack adapter: position j starts at frame j * k
    frames = position_frames(torch.tensor([2, 1]), 3, lens, None, "stack", downsample=4)
    assert frames.tolist() == [[0, 4, -1], [0, -1, -1]]
    # a transcript longer than the frames has no alignment: all its text goes to the last chunk
    assert text_chunks(lp[:, :2], torch.tensor([2]), [[2, 3, 4]], torch.tensor([1]), 4) == [[0, 0, 0]]


def test_speech_llm_trains_and_decodes_interleaved():
    """The loss reaches the LLM and the CTC head; greedy decoding reads chunks as training does:
    teacher-forcing the decoder's own output (each token in the chunk that wrote it) gives that
    output as the argmax at every target position (a chunk's EOS too, unless the chunk hit the
    token cap)."""
    torch.manual_seed(0)
    model = make_speech_llm(ctc_vocab_size=V, ctc_loss_scale=0.3, adapter_type="ctc", adapter_blank_threshold=1.0,
                            interleave_chunk_frames=4)
    feats, lens, texts = batch()
    loss, _ = model(feats, lens, texts, ctc_targets=texts)
    loss.backward()
    assert torch.isfinite(loss)
    for name in ("llm.emb.weight", "llm.head.weight", "ctc_output.1.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    model.eval()
    cap = model.interleave_chunk_frames  # tokens per chunk; the total (200) does not bind
    hyps = model.generate(feats, lens, DecodingOptions("greedy_search", max_new_tokens=200))
    audio, audio_lens, _, enc_lens, ctc_lp = model.encode(feats, lens)
    audio_chunk, num_chunks = model._audio_chunks(audio, audio_lens, enc_lens, ctc_lp)
    checked = 0
    for r, hyp in enumerate(hyps):
        done = [0]  # tokens written through chunk k: decode the first k + 1 chunks alone
        for k in range(int(num_chunks[r])):
            sub = audio_chunk[r:r + 1].masked_fill(audio_chunk[r:r + 1] > k, -1)
            done.append(len(generate_interleaved(model.llm, model.template, audio[r:r + 1], sub,
                                                 torch.tensor([k + 1]), max_tokens_per_chunk=cap)[0].tokens))
        counts = [b - a for a, b in zip(done, done[1:])]
        assert done[-1] == len(hyp.tokens)
        t_chunks = [k for k, c in enumerate(counts) for _ in range(c)]
        embeds, lengths, targets = assemble_interleaved(audio[r:r + 1], audio_chunk[r:r + 1], num_chunks[r:r + 1],
                                                        model.template, model.llm.emb, [hyp.tokens], [t_chunks])
        pred = model.llm(inputs_embeds=embeds, lengths=lengths)[0].argmax(-1)
        eos_seen = 0
        for i in (targets[0] != IGNORE_ID).nonzero()[:, 0].tolist():
            want = int(targets[0, i])
            if want == EOS:
                eos_seen += 1
                if counts[eos_seen - 1] == cap:  # the chunk was cut by the cap, not ended by EOS
                    continue
            assert int(pred[i]) == want, (r, i)
            checked += 1
    assert checked > len(hyps)


def test_interleaving_needs_a_ctc_head_over_the_llm_vocabulary():
    with pytest.raises(ValueError, match="interleave-chunk-frames"):
        make_speech_llm(interleave_chunk_frames=4)
    with pytest.raises(ValueError, match="after <audio>"):
        make_speech_llm(template=PromptTemplate([5], [], EOS), ctc_vocab_size=V, interleave_chunk_frames=4)


@pytest.mark.parametrize("method", ["greedy_search", "beam_search"])
def test_max_new_tokens_holds_over_all_chunks(method):
    """--max-new-tokens caps the whole transcript, not each chunk: a row stops when it is spent
    (truncated); greedy gives the first tokens of the uncapped transcript."""
    torch.manual_seed(0)
    model = make_speech_llm(ctc_vocab_size=V, ctc_loss_scale=0.3, adapter_type="ctc", adapter_blank_threshold=1.0,
                            interleave_chunk_frames=4).eval()
    feats, lens, _ = batch()
    free = model.generate(feats, lens, DecodingOptions(method, beam_size=3, max_new_tokens=200))
    assert not any(h.truncated for h in free)
    cap = 6
    assert max(len(h.tokens) for h in free) > cap > model.interleave_chunk_frames  # spent in a later chunk
    for h, f in zip(model.generate(feats, lens, DecodingOptions(method, beam_size=3, max_new_tokens=cap)), free):
        assert len(h.tokens) <= cap
        if len(f.tokens) > cap:
            assert h.truncated and len(h.tokens) == cap
        if method == "greedy_search":
            assert h.tokens == f.tokens[:cap]
        if len(f.tokens) < cap:
            assert (h.tokens, h.truncated) == (f.tokens, False)


@pytest.mark.parametrize("method,ctc_weight", [("greedy_search", 0.0), ("beam_search", 0.0),
                                               ("greedy_search", 0.5), ("beam_search", 0.5)])
def test_a_batch_decodes_as_its_utterances_one_by_one(method, ctc_weight):
    """Rows with different numbers of chunks and audio positions per chunk: padding never reaches
    the state, the CTC prefixes follow their rows."""
    torch.manual_seed(0)
    model = make_speech_llm(ctc_vocab_size=V, ctc_loss_scale=0.3, adapter_type="ctc", adapter_blank_threshold=1.0,
                            interleave_chunk_frames=4).eval()
    feats, lens, _ = batch()
    options = DecodingOptions(method, beam_size=3, ctc_weight=ctc_weight, max_new_tokens=3)
    together = model.generate(feats, lens, options)
    _, _, _, enc_lens, _ = model.encode(feats, lens)
    assert len(set(((enc_lens + 3) // 4).tolist())) > 1  # the rows leave the batch at different chunks
    for r in range(feats.size(0)):
        alone = model.generate(feats[r:r + 1, :int(lens[r])], lens[r:r + 1], options)[0]
        assert together[r].tokens == alone.tokens, r
        assert together[r].score == pytest.approx(alone.score, abs=1e-4)
    assert sum(len(h.tokens) for h in together) > 0


class _Recorder:
    """An RWKV-7 that records the token ids it embeds as inputs (the prompt's and the chunks'
    texts; `step` embeds its tokens inside the real RWKV-7, unrecorded)."""

    def __init__(self, llm):
        self.llm, self.read = llm, []

    def __getattr__(self, name):
        return getattr(self.llm, name)

    def emb(self, idx):
        self.read.append(idx.tolist())
        return self.llm.emb(idx)


def test_joint_ctc_per_chunk_writes_each_token_in_the_chunk_it_starts_in():
    """With ctc_weight 1 and a confident CTC head, the text is the CTC labelling and each chunk
    writes exactly the tokens whose first frame lies in it (the horizon moves with the chunk)."""
    from zipformer_rwkv.decoding.ctc_prefix_score import CtcPrefixScorer

    # chunks of 4 frames: [_ 10 10 _] [11 _ _ 12] [12 _ 13 _] [14 14]; token 12 spans chunks 1 and 2
    frames = [0, 10, 10, 0, 11, 0, 0, 12, 12, 0, 13, 0, 14, 14]
    lp = torch.full((1, len(frames), V), -9.0)
    lp[0, torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    lp = lp.log_softmax(-1)
    model = make_speech_llm(ctc_vocab_size=V, ctc_loss_scale=0.3, adapter_type="ctc", interleave_chunk_frames=4)
    llm = _Recorder(model.llm.eval())
    audio = torch.randn(1, 3, model.llm.emb.embedding_dim)
    audio_chunk, num_chunks = torch.tensor([[0, 1, 3]]), torch.tensor([4])
    for method in ("greedy_search", "beam_search"):
        llm.read = []
        ctc = CtcPrefixScorer(lp, torch.tensor([len(frames)]), blank=0, eos_id=EOS, pre_beam=4)
        hyp = generate_interleaved(llm, model.template, audio, audio_chunk, num_chunks, method, beam_size=3,
                                   max_tokens_per_chunk=5, ctc=ctc, ctc_weight=1.0, chunk_frames=4)[0]
        assert hyp.tokens == [10, 11, 12, 13, 14]
        assert not hyp.truncated
        texts = [ids for ids in llm.read if ids[-1] == EOS]
        assert texts == [[10, EOS], [11, 12, EOS], [13, EOS]], method  # the last chunk's text is not read


def test_joint_ctc_needs_the_chunk_size():
    model = make_speech_llm(ctc_vocab_size=V, ctc_loss_scale=0.3, adapter_type="ctc", interleave_chunk_frames=4)
    from zipformer_rwkv.decoding.ctc_prefix_score import CtcPrefixScorer

    ctc = CtcPrefixScorer(torch.zeros(1, 4, V).log_softmax(-1), torch.tensor([4]), eos_id=EOS)
    with pytest.raises(ValueError, match="chunk_frames"):
        generate_interleaved(model.llm, model.template, torch.randn(1, 1, 64), torch.tensor([[0]]), torch.tensor([1]),
                             ctc=ctc, ctc_weight=0.5)
