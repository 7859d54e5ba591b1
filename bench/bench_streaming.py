#!/usr/bin/env python3
"""Streaming decoding cost at batch 1 (`transcribe.py --streaming`'s path): algorithmic latency,
compute per chunk (p50/p95) on 1 and 2 threads, RTFx, and resident memory along a long stream.

Usage (from the repository root):
  # a trained streaming model (./run.sh --streaming true), 10 minutes of concatenated audio
  python bench/bench_streaming.py --checkpoint exp_streaming/llm/epoch-1.pt --audio data/wav/*.wav
  # no trained model: the default preset's sizes with random weights (timing only)
  python bench/bench_streaming.py --minutes 10

Audio: the --audio files (any rate; channel 0, resampled to 16 kHz) concatenated and repeated up to
--minutes; without --audio, the ALSA test recordings (/usr/share/sounds/alsa/*.wav) if present, else
noise. It is fed block by block as a live stream would arrive (one chunk of samples per block),
through `OnlineFbank` and `StreamingSpeechLLM`; a block's compute time is the wall time of its
fbank + encoder + RWKV-7 work, and the blocks that end a chunk give the per-chunk times. RTFx = audio
seconds / total compute. Each is given as wall time and as the process's CPU time
(`time.process_time`, all threads): on a machine shared with other jobs the wall time includes the
waits for a core, the CPU time does not (with 1 thread it is the compute an idle core would need,
cache sharing aside). RSS is the process's resident memory (/proc/self/statm) after the chunk
that ends each tenth of the stream; the last column is the process peak (ru_maxrss). Below the
table, the mean CPU time per chunk is split into the encoder, RWKV-7 and the rest. Without
--checkpoint, the model is run.sh's default preset with --streaming true (Zipformer2 6.4 M params,
chunk 0.64 s, left context 2.56 s, running CMN; RWKV-7 4 x 256, BPE 500; CTC adapter) with random
weights, and each chunk's text is capped at --max-tokens-per-chunk tokens (default 3, about 4.7
tokens/s: a random model rarely writes EOS, a trained one writes what was said; a trained model
gets the chunk's frames, as decode.py). The stream's total is not capped (--max-new-tokens: decode.py's
200 is per utterance, and a 10-minute stream capped at it would stop running RWKV-7 after a minute).

Algorithmic latency: a chunk of K encoder frames (25 Hz) is decoded once the last fbank frame of its
last encoder window has arrived: 13 fbank frames (encoder_embed's convolutions and ConvNeXt) plus
the 25 ms window's overhang past the chunk's end, i.e. K * 40 ms + 137.5 ms, plus compute.
"""
import argparse
import glob
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from zipformer_rwkv.dataset.features import FRAME_RATE, SAMPLE_RATE
from zipformer_rwkv.dataset.online_fbank import LEFT, OnlineFbank
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.speechllm.streaming import StreamingSpeechLLM
from zipformer_rwkv.zipformer.encoder import EMBED_RIGHT_CONTEXT, SUBSAMPLING_FACTOR


def default_random_model(seed: int = 0):
    """run.sh's default preset with --streaming true, random weights (eval mode)."""
    from zipformer_rwkv.rwkv7 import RWKV7, RWKV7Config
    from zipformer_rwkv.speechllm.model import SpeechLLM, SpeechLLMConfig
    from zipformer_rwkv.speechllm.prompt import PromptTemplate
    from zipformer_rwkv.zipformer import ZipformerConfig, ZipformerEncoder

    torch.manual_seed(seed)
    enc = ZipformerEncoder(ZipformerConfig(
        num_encoder_layers=(2, 2, 2, 2), downsampling_factor=(1, 2, 4, 2), feedforward_dim=(384, 512, 512, 384),
        num_heads=(4, 4, 4, 4), encoder_dim=(128, 192, 192, 128), encoder_unmasked_dim=(128, 128, 128, 128),
        cnn_module_kernel=(31, 31, 15, 31), query_head_dim=(32,), value_head_dim=(12,), pos_head_dim=(4,),
        pos_dim=48, encoder_embed_channels=32, running_cmn=True, causal=True, chunk_size=(32,),
        left_context_frames=(128,)))
    llm = RWKV7(RWKV7Config.with_default_dims(n_layer=4, n_embd=256, vocab_size=500))
    with torch.no_grad():  # from-scratch init zeroes output projections: perturb so outputs vary
        for p in llm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    config = SpeechLLMConfig(adapter_type="ctc", interleave_chunk_frames=16, ctc_loss_scale=0.3)
    return SpeechLLM(enc, llm, PromptTemplate(prefix=[], infix=[0], eos_id=0), config, ctc_vocab_size=500).eval()


def load_audio(paths, seconds: float) -> np.ndarray:
    """float32 16 kHz samples: the files concatenated, repeated to `seconds` (noise without files)."""
    from zipformer_rwkv.transcribe import load_audio as load_one

    pieces = [load_one(Path(p)) for p in paths]
    if not pieces:
        rng = np.random.default_rng(0)
        pieces = [(0.05 * rng.standard_normal(SAMPLE_RATE * 10)).astype(np.float32)]
    one = np.concatenate(pieces)
    return np.tile(one, int(np.ceil(seconds * SAMPLE_RATE / one.size)))[: int(seconds * SAMPLE_RATE)]


def rss_mib() -> float:
    """Resident memory now (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run(model, audio: np.ndarray, options: DecodingOptions, threads: int, chunk_tokens: int) -> dict:
    """Stream `audio` once on `threads` threads; per-chunk times, RTFx, RSS along the stream."""
    torch.set_num_threads(threads)
    chunk_samples = model.interleave_chunk_frames * SUBSAMPLING_FACTOR * SAMPLE_RATE // FRAME_RATE
    fbank, stream = OnlineFbank(), StreamingSpeechLLM(model, options, max_tokens_per_chunk=chunk_tokens)
    parts = {"encoder": 0.0, "RWKV-7": 0.0}  # CPU seconds inside each part

    def timed(name, fn):
        def call(*a):
            c = time.process_time()
            out = fn(*a)
            parts[name] += time.process_time() - c
            return out
        return call
    stream._encode_window = timed("encoder", stream._encode_window)
    stream._decode_chunk = timed("RWKV-7", stream._decode_chunk)
    chunk_times, chunk_cpu, rss, total, cpu = [], [], [], 0.0, 0.0
    marks = {int(audio.size * i / 10) // chunk_samples for i in range(1, 11)}
    for b, i in enumerate(range(0, audio.size, chunk_samples)):
        t0, c0 = time.perf_counter(), time.process_time()
        done = stream.accept_features(fbank.accept_waveform(audio[i: i + chunk_samples]))
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        total, cpu = total + dt, cpu + dc
        if done:
            chunk_times.append(dt / done)
            chunk_cpu.append(dc / done)
        if b in marks:
            rss.append(rss_mib())
    t0, c0 = time.perf_counter(), time.process_time()
    stream.accept_features(fbank.finish())
    hyp = stream.finish()
    total, cpu = total + time.perf_counter() - t0, cpu + time.process_time() - c0
    rss.append(rss_mib())
    ms, cpu_ms = np.array(chunk_times) * 1000, np.array(chunk_cpu) * 1000
    seconds = audio.size / SAMPLE_RATE
    return dict(threads=threads, chunks=len(ms), p50=np.percentile(ms, 50), p95=np.percentile(ms, 95),
                cpu_p50=np.percentile(cpu_ms, 50), cpu_p95=np.percentile(cpu_ms, 95), rtfx=seconds / total,
                cpu_rtfx=seconds / cpu, rss=rss, tokens=len(hyp.tokens) if hyp else 0,
                parts={k: v / stream.chunks * 1000 for k, v in parts.items()}, cpu_chunk=cpu / stream.chunks * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a streaming llm checkpoint; none: random")
    parser.add_argument("--audio", nargs="*", default=None, help="files to concatenate (default: ALSA samples)")
    parser.add_argument("--minutes", type=float, default=10.0, help="stream length")
    parser.add_argument("--threads", type=str, default="1,2", help="torch threads to measure, comma separated")
    parser.add_argument("--max-tokens-per-chunk", type=int, default=None,
                        help="tokens a chunk may write (min with its frames); default 3 for the random model, "
                             "else the chunk's frames (as decode.py)")
    parser.add_argument("--max-new-tokens", type=int, default=1_000_000,
                        help="tokens the whole stream may write (decode.py's 200 is per utterance)")
    args = parser.parse_args()
    if args.checkpoint is not None:
        from zipformer_rwkv.transcribe import load_model

        ns = argparse.Namespace(checkpoint=args.checkpoint, use_averaged_model=False, bpe_model=None)
        try:
            _, model, _ = load_model(ns)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            sys.exit(f"bench_streaming.py: error: {e}")
        what = f"{args.checkpoint}"
    else:
        model = default_random_model()
        what = "random weights, run.sh default preset with --streaming true (no trained streaming model)"
    k = model.interleave_chunk_frames
    cap = min(k, args.max_tokens_per_chunk or (3 if args.checkpoint is None else k))
    options = DecodingOptions(max_new_tokens=args.max_new_tokens)
    files = args.audio if args.audio is not None else sorted(glob.glob("/usr/share/sounds/alsa/*.wav"))
    audio = load_audio(files, args.minutes * 60)
    enc = model.encoder
    chunk_ms = k * SUBSAMPLING_FACTOR * 1000 // FRAME_RATE
    lookahead_ms = ((EMBED_RIGHT_CONTEXT - 1) * 160 + (400 - LEFT)) / SAMPLE_RATE * 1000
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model: {what}; {params:.2f} M parameters; encoder chunk {enc.decode_chunk_size} x 20 ms, left context "
          f"{enc.config.left_context_frames[0]} x 20 ms; running CMN {enc.config.running_cmn}")
    print(f"audio: {audio.size / SAMPLE_RATE / 60:.1f} min from {len(files)} file(s) "
          f"{'(noise)' if not files else ''}; tokens per chunk <= {cap}, per stream <= {args.max_new_tokens}; "
          f"CPU: {torch.get_num_threads()} "
          f"threads available, {Path('/proc/cpuinfo').read_text().count('processor')} cores")
    print()
    print(f"algorithmic latency: chunk {chunk_ms} ms + look-ahead {lookahead_ms:.1f} ms = "
          f"{chunk_ms + lookahead_ms:.1f} ms (+ compute)")
    print()
    print("| threads | chunks | wall ms/chunk p50 | p95 | p95 / chunk | RTFx (wall) | CPU ms/chunk p50 | p95 "
          "| RTFx (CPU time) | tokens | RSS at 10%, 20%, ..., 100% of the stream (MiB) | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    split = []
    for t in (int(v) for v in args.threads.split(",")):
        r = run(model, audio, options, t, cap)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {t} | {r['chunks']} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p95'] / chunk_ms:.3f} | {r['rtfx']:.1f} "
              f"| {r['cpu_p50']:.1f} | {r['cpu_p95']:.1f} | {r['cpu_rtfx']:.1f} | {r['tokens']} "
              f"| {', '.join(f'{v:.0f}' for v in r['rss'])} | {peak:.0f} |", flush=True)
        split.append(f"{t} thread(s): mean CPU ms per chunk {r['cpu_chunk']:.1f} = encoder {r['parts']['encoder']:.1f} "
                     f"+ RWKV-7 (CTC head, adapter, reading, search) {r['parts']['RWKV-7']:.1f} + fbank and the rest "
                     f"{r['cpu_chunk'] - sum(r['parts'].values()):.1f}")
    print()
    print("\n".join(split))


if __name__ == "__main__":
    main()
