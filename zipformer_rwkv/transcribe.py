#!/usr/bin/env python3
"""Transcribe audio files (wav/flac/mp3/..., any sampling rate) with a trained ctc or llm checkpoint.

Usage (from the repository root):

  python zipformer_rwkv/transcribe.py --checkpoint exp/llm/epoch-10.pt a.wav b.flac c.mp3
  python zipformer_rwkv/transcribe.py --checkpoint exp/llm/epoch-10.pt --decoding-method beam_search \
    --beam-size 4 --use-averaged-model true --ctc-weight 0.7 recordings/*.flac

  # streaming (a causal, chunk-interleaved model): a file, or raw 16 kHz S16_LE mono PCM on stdin
  arecord -f S16_LE -r 16000 | python zipformer_rwkv/transcribe.py --checkpoint exp/llm/epoch-1.pt --streaming true -

Prints one line per file: `{path}\t{transcript}`. With `--streaming true` the audio is read block by
block, fbank is computed as it arrives (`dataset/online_fbank.py`) and decoded chunk by chunk
(`speechllm/streaming.py`); each chunk that ends adds a line `{path}\t{seconds}s\t{transcript so far}`
(seconds: audio decoded so far), and the end of the stream the final `{path}\t{transcript}` line.
`-` is stdin (streaming only). The model structure is read from the checkpoint
(written by train.py); `--use-averaged-model true` uses its running average `model_avg` (an error
when the run made fewer updates than --average-period, whose average is still the initial weights).
Audio is read with lhotse/soundfile; of a multi-channel file channel 0 is used, as the data import
(local/cut_builder.py) does for training cuts (no mixdown); it is resampled to 16 kHz and turned
into 80-dim fbank (100 Hz) exactly as in training.

Every file is tried. A file that cannot be transcribed (missing, unreadable, no samples) gets one
line `transcribe.py: {path}: {reason}` on stderr; a transcript that hit --max-new-tokens without
EOS is printed and flagged on stderr. Exit status: 0 if every file was transcribed, else the number
of failed files (at most 100); 1 with one `transcribe.py: error:` line if the model cannot be loaded.
"""
import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from zipformer_rwkv import recipe
from zipformer_rwkv.dataset.features import FRAME_RATE, SAMPLE_RATE, fbank_extractor
from zipformer_rwkv.dataset.online_fbank import OnlineFbank
from zipformer_rwkv.decoding import inference
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.speechllm.streaming import StreamingSpeechLLM, check_streamable
from zipformer_rwkv.training.checkpoint import checkpoint_params, read_checkpoint
from zipformer_rwkv.utils import AttributeDict, str2bool
from zipformer_rwkv.zipformer.encoder import SUBSAMPLING_FACTOR


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="epoch-N.pt / checkpoint-N.pt / pretrained.pt")
    parser.add_argument("--use-averaged-model", type=str2bool, default=False, help="use the file's model_avg")
    DecodingOptions.add_arguments(parser)
    parser.add_argument("--bpe-model", type=str, default=None, help="override the checkpoint's BPE model path")
    parser.add_argument("files", nargs="+", type=Path,
                        help="audio files; with --streaming true, `-` reads raw 16 kHz S16_LE mono PCM from stdin")
    return parser


def load_fbank(path: Path) -> torch.Tensor:
    """(T, 80) fbank at 100 Hz of channel 0 of an audio file, resampled to 16 kHz.

    Raises:
      FileNotFoundError / ValueError: naming the file if it is missing, unreadable or holds no
        samples.
    """
    return torch.from_numpy(fbank_extractor().extract(load_audio(path), SAMPLE_RATE))


def load_audio(path: Path) -> np.ndarray:
    """(S,) float32 samples at 16 kHz of channel 0 of an audio file; raises as `load_fbank`."""
    from lhotse import Recording

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        rec = Recording.from_file(path)
        if rec.sampling_rate != SAMPLE_RATE:
            rec = rec.resample(SAMPLE_RATE)
        audio = rec.load_audio(channels=rec.channel_ids[0]).reshape(-1)  # as local/cut_builder.py
    except Exception as e:
        raise ValueError(f"{path}: cannot read audio ({_first_reason(e)})") from None
    if audio.size == 0:
        raise ValueError(f"{path}: no audio samples (header only?)")
    return audio.astype(np.float32)


def audio_blocks(path: Path, block: int = 1600) -> Iterator[np.ndarray]:
    """float32 16 kHz samples in blocks of at most `block`: of raw S16_LE mono PCM on stdin for `-`
    (as it arrives), else of the file (`load_audio`).

    Raises:
      ValueError / FileNotFoundError: as `load_audio`; stdin ending on half a sample or with none.
    """
    if str(path) != "-":
        audio = load_audio(path)
        for i in range(0, audio.size, block):
            yield audio[i: i + block]
        return
    stdin, rest, total = sys.stdin.buffer, b"", 0
    while True:
        data = stdin.read1(2 * block) if hasattr(stdin, "read1") else stdin.read(2 * block)
        if not data:
            break
        data, rest = rest + data, b""
        if len(data) % 2:
            data, rest = data[:-1], data[-1:]
        total += len(data) // 2
        yield np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if rest:
        raise ValueError("-: stdin ended on half a 16-bit sample (expected raw S16_LE PCM)")
    if total == 0:
        raise ValueError("-: no audio samples on stdin")


def transcribe_stream(model, tokenizers, path: Path, options: DecodingOptions) -> tuple:
    """Stream one file or stdin through `StreamingSpeechLLM`, printing `{path}\t{seconds}s\t{partial}`
    after every chunk; returns (final transcript, note) as `transcribe`."""
    fbank, stream = OnlineFbank(), StreamingSpeechLLM(model, options)
    chunk_seconds = model.interleave_chunk_frames * SUBSAMPLING_FACTOR / FRAME_RATE
    decode = tokenizers["llm"].decode
    for block in audio_blocks(path):
        if stream.accept_features(fbank.accept_waveform(block)):
            print(f"{path}\t{stream.chunks * chunk_seconds:.2f}s\t{decode(stream.tokens).strip()}", flush=True)
    stream.accept_features(fbank.finish())
    hyp = stream.finish()
    if hyp is None:
        return f"<{recipe.NOTE_SKIPPED}>", recipe.NOTE_SKIPPED
    return decode(hyp.tokens).strip(), recipe.NOTE_TRUNCATED if hyp.truncated else ""


def _first_reason(e: Exception) -> str:
    """One line of an audio-reading error: lhotse lists one line per backend it tried; the first
    backend's (soundfile) is kept, without the class names."""
    lines = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    first = next((line for line in lines if line.startswith("Exception #")), lines[0])
    return re.sub(r"^Exception #\d+ \(<[^>]*>\): (<class '[^']*'>: )?", "", first)


def load_model(args) -> tuple:
    """(params, model, tokenizers) of `--checkpoint` (`inference.load_model`), after the checks that
    need only the file's options (read without its tensors).

    Raises:
      ValueError: not written by train.py, a language model, or --use-averaged-model on a run shorter
        than --average-period; and what `inference.load_model` raises.
    """
    options = checkpoint_params(read_checkpoint(args.checkpoint, mmap=True))
    if "model_type" not in options:
        raise ValueError(f"{args.checkpoint} was not written by train.py (no model_type)")
    if options["model_type"] == "lm":
        raise ValueError(f"{args.checkpoint} is a language model (--model-type lm); it cannot transcribe audio")
    updates, period = options.get("batch_idx_train"), options.get("average_period")
    if args.use_averaged_model and updates is not None and period and updates < period:
        raise ValueError(f"{args.checkpoint}: model_avg is still the initial weights ({updates} updates < "
                         f"--average-period {period}); use --use-averaged-model false")
    params = AttributeDict(options)
    if args.bpe_model:
        params.bpe_model = args.bpe_model
    return inference.load_model(args.checkpoint, params, use_averaged_model=args.use_averaged_model)


def transcribe(model, tokenizers, feats: torch.Tensor, options: DecodingOptions) -> tuple:
    """(transcript, note) of one (T, 80) fbank tensor; the transcript is `<NOTE>` when
    recipe.recognize skips it, the note recipe.NOTE_TRUNCATED when it hit --max-new-tokens."""
    hyps, notes = recipe.recognize(model, tokenizers, feats.unsqueeze(0), torch.tensor([feats.shape[0]]), options)
    text = f"<{notes[0]}>" if notes[0] == recipe.NOTE_SKIPPED else hyps[0].strip()
    return text, notes[0]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    args = get_parser().parse_args()
    try:
        options = DecodingOptions.from_args(args)
        if not options.streaming and any(str(p) == "-" for p in args.files):
            raise ValueError("`-` (raw PCM on stdin) needs --streaming true")
        _, model, tokenizers = load_model(args)
        if options.streaming:
            check_streamable(model, options)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"transcribe.py: error: {e}")
    failed, truncated = 0, 0
    for path in args.files:
        try:
            if options.streaming:
                text, note = transcribe_stream(model, tokenizers, path, options)
            else:
                text, note = transcribe(model, tokenizers, load_fbank(path), options)
        except (ValueError, OSError, RuntimeError) as e:
            failed += 1
            msg = str(e) if str(path) in str(e) else f"{path}: {type(e).__name__}: {e}"
            print(f"transcribe.py: {msg}", file=sys.stderr, flush=True)
            continue
        print(f"{path}\t{text}", flush=True)
        if note == recipe.NOTE_TRUNCATED:
            truncated += 1
            print(f"transcribe.py: {path}: {note}: stopped after --max-new-tokens {args.max_new_tokens}, "
                  f"the transcript may be cut short", file=sys.stderr, flush=True)
    if failed or truncated:
        print(f"transcribe.py: {len(args.files) - failed} of {len(args.files)} files transcribed, "
              f"{failed} failed, {truncated} hit --max-new-tokens", file=sys.stderr)
    if failed:
        sys.exit(min(failed, 100))


if __name__ == "__main__":
    main()
