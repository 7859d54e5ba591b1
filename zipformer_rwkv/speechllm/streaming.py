"""Streaming decoding (`--streaming`): fbank in, transcript out chunk by chunk, in constant memory.

A chunk-interleaved `SpeechLLM` (`--interleave-chunk-frames K`) with a causal Zipformer
(`--causal true`; fbank normalised by `--running-cmn`, if at all) can write each chunk's text as
soon as the chunk's audio has arrived (SpeechLLM-XL, arXiv 2410.03752): the encoder runs
`streaming_forward` on one window of `2 * chunk_size + 13` fbank frames at a time with its caches
(icefall's layout), every K encoder frames (25 Hz) go through the CTC head and the adapter, and
RWKV-7 reads them into its carried state, writes the chunk's text up to EOS, and reads that text
and EOS before the next chunk's audio.
Nothing grows with the length of the stream but the transcript.

The result equals `SpeechLLM.generate` (`interleave.generate_interleaved`) on the chunk-masked full
forward of the same fbank, padded at the end as here (`LOG_EPS` frames, as icefall's streaming
decoding pads a stream's tail): tests/speechllm/test_streaming.py. Joint CTC search (`--ctc-weight`)
is not streamed.
"""
from typing import List, Optional

import torch
from torch import Tensor

from zipformer_rwkv.decoding.search import DecodingOptions, Hypothesis
from zipformer_rwkv.speechllm.interleave import chunk_cap, decode_chunk
from zipformer_rwkv.zipformer.encoder import LOG_EPS, RunningCmn, encoder_out_length


def check_streamable(model, options: DecodingOptions = DecodingOptions()) -> None:
    """Raise ValueError (one line saying what to change) unless `model` can decode a stream.

    Needs: a `SpeechLLM` (llm checkpoint) with chunk interleaving, a causal encoder with
    `chunk_size[0] > 0`, with the stack adapter a chunk that is a whole number of positions, and
    `options.ctc_weight == 0`.
    """
    from zipformer_rwkv.speechllm.model import SpeechLLM

    if not isinstance(model, SpeechLLM):
        raise ValueError(f"--streaming decodes a chunk-interleaved speech LLM (llm checkpoint), "
                         f"not a {type(model).__name__}")
    if model.interleave_chunk_frames <= 0:
        raise ValueError("--streaming needs a model trained with --interleave-chunk-frames > 0 "
                         "(this one reads the whole utterance before it writes)")
    config = getattr(model.encoder, "config", None)
    if config is None or not getattr(config, "causal", False):
        raise ValueError("--streaming needs a causal encoder: this checkpoint was trained without --causal "
                         "(train one with ./run.sh --streaming true)")
    if config.chunk_size[0] <= 0:
        raise ValueError(f"--streaming needs the encoder's first --chunk-size > 0, got {config.chunk_size}")
    c = model.config
    if c.adapter_type == "stack" and model.interleave_chunk_frames % c.adapter_downsample:
        raise ValueError(f"--streaming with the stack adapter needs --interleave-chunk-frames "
                         f"({model.interleave_chunk_frames}) to be a multiple of --adapter-downsample "
                         f"({c.adapter_downsample})")
    if options.ctc_weight != 0:
        raise ValueError("--streaming decodes with RWKV-7 scores only: use --ctc-weight 0")


class StreamingSpeechLLM:
    """One stream (batch 1) through a chunk-interleaved causal speech LLM.

    Feed fbank frames (100 Hz) with `accept_features` as they arrive; after each call, `tokens`
    holds the transcript of every chunk decoded so far; `finish` decodes the rest. `reset` starts a
    new stream with the same model.

    Args:
      model: a `SpeechLLM` in eval mode passing `check_streamable`.
      options: greedy_search or beam_search (a beam within each chunk, as `generate_interleaved`);
        a chunk's text has at most `max_tokens_per_chunk` tokens, the stream's at most
        max_new_tokens: once they are written, later chunks are read by the encoder only and the
        hypothesis is `truncated`.
      max_tokens_per_chunk: None: K, the chunk's encoder frames (as decode.py); fewer only to bound
        the cost of a model that rarely writes EOS (bench/bench_streaming.py's random weights).
    Raises:
      ValueError: as `check_streamable`, or max_tokens_per_chunk < 1.
    """

    def __init__(self, model, options: DecodingOptions = DecodingOptions(),
                 max_tokens_per_chunk: Optional[int] = None):
        check_streamable(model, options)
        if max_tokens_per_chunk is not None and max_tokens_per_chunk < 1:
            raise ValueError(f"max_tokens_per_chunk must be >= 1, got {max_tokens_per_chunk}")
        self.model = model
        self.options = options
        self.encoder = model.encoder
        self.device = next(model.parameters()).device
        self.chunk_frames = model.interleave_chunk_frames
        self.chunk_tokens = min(self.chunk_frames, max_tokens_per_chunk or self.chunk_frames)
        self.window, self.shift = self.encoder.chunk_input_frames
        self.encoder_chunk = self.encoder.decode_chunk_size // 2  # 25 Hz frames per streaming_forward
        t = model.template
        emb = model.llm.emb
        with torch.no_grad():
            self.prefix = emb(torch.tensor(t.prefix, dtype=torch.long, device=self.device))
            self.infix = emb(torch.tensor(t.infix, dtype=torch.long, device=self.device))
        self.reset()

    def reset(self) -> None:
        """Forget the stream: fresh encoder caches and RWKV-7 state, empty transcript."""
        self.feats = torch.zeros(0, self.encoder.config.feature_dim, device=self.device)
        self.feats_offset = 0  # stream index of self.feats[0]
        self.num_feats = 0  # fbank frames received
        dim = self.encoder.config.feature_dim
        self.cmn = RunningCmn(dim, self.device) if self.encoder.config.running_cmn else (lambda x: x)
        self.windows = 0  # streaming_forward calls made
        self.encoder_states = self.encoder.get_init_states(1, self.device)
        self.enc = torch.zeros(0, self.encoder.encoder_out_dim, device=self.device)  # frames not yet decoded
        self.enc_produced = 0
        self.llm_state = None
        self.pending: Optional[List[int]] = None  # last chunk's text, read (with EOS) before the next chunk
        self.chunks = 0
        self.hyp = Hypothesis()
        self.finished = False

    @property
    def tokens(self) -> List[int]:
        """Token ids of the transcript so far (RWKV-7's tokenizer)."""
        return self.hyp.tokens

    @torch.no_grad()
    def accept_features(self, feats: Tensor) -> int:
        """Append fbank frames (T, 80) float at 100 Hz; run the encoder on every complete window and
        RWKV-7 on every complete chunk. Returns the number of chunks decoded by this call.

        Raises:
          ValueError: after `finish`, or a wrong shape.
        """
        if self.finished:
            raise ValueError("accept_features after finish: call reset() for a new stream")
        if feats.ndim != 2 or feats.shape[1] != self.feats.shape[1]:
            raise ValueError(f"expected (T, {self.feats.shape[1]}) fbank, got {tuple(feats.shape)}")
        self.feats = torch.cat([self.feats, self.cmn(feats.to(self.device, torch.float32))])
        self.num_feats += feats.shape[0]
        while self.num_feats >= self.windows * self.shift + self.window:
            self._encode_window()
        return self._decode_complete_chunks(self.chunk_frames)

    @torch.no_grad()
    def finish(self) -> Optional[Hypothesis]:
        """End of stream: pad the fbank tail with LOG_EPS frames, encode the rest, decode the last
        chunks. Returns the whole transcript's `Hypothesis`, or None when the stream is too short to
        give RWKV-7 any input (`SpeechLLM.min_encoder_frames`; fewer than 9 fbank frames)."""
        if self.finished:
            raise ValueError("finish called twice: call reset() for a new stream")
        self.finished = True
        total = int(encoder_out_length(self.num_feats)) if self.num_feats >= 9 else 0
        if total < self.model.min_encoder_frames:
            return None
        windows = -(-total // self.encoder_chunk)
        need = (windows - 1) * self.shift + self.window
        if need > self.num_feats:
            pad = torch.full((need - self.num_feats, self.feats.shape[1]), LOG_EPS, device=self.device)
            self.feats = torch.cat([self.feats, self.cmn(pad)])
            self.num_feats = need
        while self.windows < windows:
            self._encode_window()
        self.enc = self.enc[: self.enc.shape[0] - (self.enc_produced - total)]  # frames past the real end
        self._decode_complete_chunks(self.chunk_frames)
        if self.enc.shape[0] > 0 or self.chunks == 0:
            self._decode_chunk(self.enc)
        return self.hyp

    def _encode_window(self) -> None:
        """One `streaming_forward` on the next window; its 25 Hz frames join `self.enc`."""
        start = self.windows * self.shift - self.feats_offset
        x = self.feats[start: start + self.window].unsqueeze(0)
        lens = torch.tensor([self.window], device=self.device)
        out, _, self.encoder_states = self.encoder.streaming_forward(x, lens, self.encoder_states)
        self.enc = torch.cat([self.enc, out[0]])
        self.enc_produced += out.shape[1]
        self.windows += 1
        drop = self.windows * self.shift - self.feats_offset  # frames before the next window
        self.feats = self.feats[drop:]
        self.feats_offset += drop

    def _decode_complete_chunks(self, k: int) -> int:
        n = 0
        while self.enc.shape[0] >= k:
            self._decode_chunk(self.enc[:k])
            self.enc = self.enc[k:]
            n += 1
        return n

    def _decode_chunk(self, frames: Tensor) -> None:
        """RWKV-7 on one chunk's encoder frames (F, C): `interleave.decode_chunk`, the step of
        `generate_interleaved`, for one row (it reads the last chunk's text and EOS first)."""
        model, llm, eos = self.model, self.model.llm, self.model.template.eos_id
        cap = chunk_cap(len(self.hyp.tokens), self.chunk_tokens, self.options.max_new_tokens)
        if self.hyp.truncated or cap < 1:  # out of tokens with audio still coming
            self.hyp.truncated = True
            self.chunks += 1
            return
        audio, audio_lens, _ = model.adapt(frames.unsqueeze(0), torch.tensor([frames.shape[0]], device=self.device))
        (best,), self.llm_state = decode_chunk(llm, eos, self.prefix, self.infix, self.llm_state, [self.pending],
                                               [audio[0, : int(audio_lens[0])]], [cap],
                                               self.options.decoding_method, self.options.beam_size)
        self.hyp.tokens.extend(best.tokens)
        self.hyp.score += best.score
        self.hyp.truncated = best.truncated and len(self.hyp.tokens) >= self.options.max_new_tokens
        self.pending = best.tokens
        self.chunks += 1


@torch.no_grad()
def streaming_generate(model, feats: Tensor, feat_lens: Tensor,
                       options: DecodingOptions = DecodingOptions()) -> List[Optional[Hypothesis]]:
    """Decode a batch as separate streams (decode.py --streaming): each utterance's fbank through
    one `StreamingSpeechLLM`.

    Args:
      feats: (N, T, 80) fbank at 100 Hz; feat_lens: (N,) valid frames.
    Returns:
      one `Hypothesis` per utterance (None for one too short to decode).
    Raises:
      ValueError: as `check_streamable`.
    """
    stream = StreamingSpeechLLM(model, options)
    out = []
    for i in range(feats.shape[0]):
        stream.reset()
        stream.accept_features(feats[i, : int(feat_lens[i])])
        out.append(stream.finish())
    return out
