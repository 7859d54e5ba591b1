"""Streaming decoding (`StreamingSpeechLLM`: cached encoder windows, carried RWKV-7 state) equals the
simulated streaming (chunk-masked full forward + `generate_interleaved`) on the same chunks, and
online fbank equals the whole-signal fbank."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiny_models import causal_speech_llm
from zipformer_rwkv.dataset.features import fbank_extractor
from zipformer_rwkv.dataset.online_fbank import OnlineFbank
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.speechllm.interleave import generate_interleaved
from zipformer_rwkv.speechllm.streaming import StreamingSpeechLLM, streaming_generate
from zipformer_rwkv.zipformer.encoder import LOG_EPS, encoder_out_length

pytestmark = pytest.mark.usefixtures("single_thread")


@torch.no_grad()
def simulated(model, feats, options, chunk_tokens=None):
    """The chunk-masked full forward of the fbank the stream sees (tail padded with LOG_EPS up to the
    last encoder window), then `generate_interleaved` (chunk_tokens per chunk; None: K)."""
    enc_model = model.encoder
    win, shift = enc_model.chunk_input_frames
    total = int(encoder_out_length(feats.shape[0]))
    windows = -(-total // (enc_model.decode_chunk_size // 2))
    x = F.pad(feats, (0, 0, 0, max(0, (windows - 1) * shift + win - feats.shape[0])), value=LOG_EPS)
    enc, _ = enc_model(x.unsqueeze(0), torch.tensor([x.shape[0]]))
    enc, enc_lens = enc[:, :total], torch.tensor([total])
    audio, audio_lens, ctc_log_probs = model.adapt(enc, enc_lens)
    audio_chunk, num_chunks = model._audio_chunks(audio, audio_lens, enc_lens, ctc_log_probs)
    k = chunk_tokens or model.interleave_chunk_frames
    return generate_interleaved(model.llm, model.template, audio, audio_chunk, num_chunks, options.decoding_method,
                                options.beam_size, max_tokens_per_chunk=k, max_new_tokens=options.max_new_tokens)[0]


def stream(model, feats, options, piece=37, chunk_tokens=None):
    s = StreamingSpeechLLM(model, options, max_tokens_per_chunk=chunk_tokens)
    partial = []
    for i in range(0, feats.shape[0], piece):
        if s.accept_features(feats[i: i + piece]):
            partial.append(list(s.tokens))
    return s.finish(), partial


@pytest.mark.parametrize("adapter_type,chunk_frames,chunk,frames,cmn", [
    ("ctc", 8, 16, 331, True),    # one encoder window per chunk; running CMN
    ("ctc", 4, 16, 290, False),    # two chunks per encoder window
    ("stack", 16, 16, 402, False),  # two encoder windows per chunk
])
def test_streaming_equals_simulated_streaming(adapter_type, chunk_frames, chunk, frames, cmn):
    model = causal_speech_llm(adapter_type, chunk_frames, chunk, running_cmn=cmn)
    feats = torch.randn(frames, 80, generator=torch.Generator().manual_seed(frames)) + 3.0
    options = DecodingOptions(decoding_method="greedy_search", max_new_tokens=200)
    ref = simulated(model, feats, options)
    hyp, partial = stream(model, feats, options)
    assert hyp.tokens == ref.tokens and hyp.truncated == ref.truncated
    assert hyp.score == pytest.approx(ref.score, abs=1e-3)
    assert len(set(hyp.tokens)) > 2  # the random model writes something chunk-dependent
    # partial transcripts only grow, each a prefix of the final one
    assert partial and all(hyp.tokens[: len(p)] == p for p in partial)
    # the carried RWKV-7 state matters: decoding each chunk from a fresh state gives another transcript
    s = StreamingSpeechLLM(model, options)
    decode_chunk = s._decode_chunk

    def forgetful(frames_):
        s.llm_state, s.pending, s.chunks = None, None, 0
        decode_chunk(frames_)
    s._decode_chunk = forgetful
    s.accept_features(feats)
    assert s.finish().tokens != ref.tokens


def test_beam_search_and_batch_of_streams():
    model = causal_speech_llm("ctc", 8, 16)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 250, 80, generator=g)
    lens = torch.tensor([250, 171])
    options = DecodingOptions(decoding_method="beam_search", beam_size=3, max_new_tokens=200)
    hyps = streaming_generate(model, feats, lens, options)
    for i in range(2):
        assert hyps[i].tokens == simulated(model, feats[i, : lens[i]], options).tokens


@pytest.mark.parametrize("cap", [5, 8, 9])
def test_max_new_tokens_holds_over_the_stream(cap):
    """The stream stops writing once --max-new-tokens are written (mid-chunk, at a chunk's end, one
    token into the next chunk), as the batch decoder does, and says it was cut."""
    model = causal_speech_llm("ctc", 4, 16)
    feats = torch.randn(290, 80, generator=torch.Generator().manual_seed(3)) + 3.0
    free = simulated(model, feats, DecodingOptions(max_new_tokens=200))
    assert len(free.tokens) > cap + 4
    options = DecodingOptions(max_new_tokens=cap)
    hyp, _ = stream(model, feats, options)
    ref = simulated(model, feats, options)
    assert (hyp.tokens, hyp.truncated) == (ref.tokens, ref.truncated)
    assert hyp.tokens == free.tokens[:cap] and hyp.truncated


def test_max_tokens_per_chunk_caps_each_chunk():
    """A per-chunk cap below K (bench_streaming.py's random model) closes each chunk after that many
    tokens, as the batch decoder's max_tokens_per_chunk does, without cutting the stream."""
    model = causal_speech_llm("ctc", 4, 16)
    feats = torch.randn(290, 80, generator=torch.Generator().manual_seed(3)) + 3.0
    options = DecodingOptions(max_new_tokens=200)
    free = simulated(model, feats, options)
    hyp, _ = stream(model, feats, options, chunk_tokens=2)
    assert hyp.tokens == simulated(model, feats, options, chunk_tokens=2).tokens
    assert hyp.tokens != free.tokens and not hyp.truncated  # the cap binds; the stream is not cut
    with pytest.raises(ValueError, match="max_tokens_per_chunk"):
        StreamingSpeechLLM(model, options, max_tokens_per_chunk=0)


def test_too_short_and_refusals():
    model = causal_speech_llm("ctc", 8, 16)
    s = StreamingSpeechLLM(model)
    s.accept_features(torch.randn(8, 80))
    assert s.finish() is None  # < 9 fbank frames: no encoder output
    with pytest.raises(ValueError, match="causal encoder"):
        StreamingSpeechLLM(causal_speech_llm(causal=False))
    with pytest.raises(ValueError, match="ctc-weight 0"):
        StreamingSpeechLLM(model, DecodingOptions(ctc_weight=0.5))
    with pytest.raises(ValueError, match="multiple of --adapter-downsample"):
        StreamingSpeechLLM(causal_speech_llm("stack", 5, 16))


@pytest.mark.parametrize("piece", [160, 1000, 2567])
def test_online_fbank_equals_whole_signal_fbank(piece):
    x = (np.random.default_rng(piece).standard_normal(16000 + 1234) * 0.1).astype(np.float32)
    ref = torch.from_numpy(fbank_extractor().extract(x, 16000))
    fb = OnlineFbank()
    got = [fb.accept_waveform(x[i: i + piece]) for i in range(0, x.size, piece)] + [fb.finish()]
    assert [g.shape[0] for g in got[:3]] != [0, 0, 0] or piece < 400  # frames come out before the end
    got = torch.cat(got)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)
    assert fb.buffer.size <= 3 * 400 + piece  # a window or so of samples, not the stream
