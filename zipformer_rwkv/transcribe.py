#!/usr/bin/env python3
"""Transcribe audio files (wav/flac/mp3/..., any sampling rate) with a trained ctc or llm checkpoint.

Usage (from the repository root):

  python zipformer_rwkv/transcribe.py --checkpoint exp/llm/epoch-10.pt a.wav b.flac c.mp3
  python zipformer_rwkv/transcribe.py --checkpoint exp/llm/epoch-10.pt --decoding-method beam_search \
    --beam-size 4 --use-averaged-model true --ctc-weight 0.7 recordings/*.flac

Prints one line per file: `{path}\t{transcript}`. The model structure is read from the checkpoint
(written by train.py); `--use-averaged-model true` uses its running average `model_avg`.
Audio is read with lhotse/soundfile, mixed down to mono, resampled to 16 kHz and turned into
80-dim fbank (100 Hz) exactly as in training.
"""
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository root importable
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import logging

import torch

from zipformer_rwkv import recipe
from zipformer_rwkv.checkpoint import load_state_dict_checked, read_checkpoint
from zipformer_rwkv.utils import AttributeDict, str2bool

SAMPLE_RATE = 16000


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="epoch-N.pt / checkpoint-N.pt / pretrained.pt")
    parser.add_argument("--use-averaged-model", type=str2bool, default=False, help="use the file's model_avg")
    parser.add_argument("--decoding-method", choices=("greedy_search", "beam_search"), default="greedy_search")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--ctc-weight", type=float, default=0.0,
                        help="llm: joint CTC / RWKV-7 search weight (decode.py --ctc-weight); 0 = off")
    parser.add_argument("--bpe-model", type=str, default=None, help="override the checkpoint's BPE model path")
    parser.add_argument("files", nargs="+", type=Path, help="audio files")
    return parser


def load_fbank(path: Path) -> torch.Tensor:
    """(T, 80) fbank at 100 Hz of an audio file (mono, resampled to 16 kHz).

    Raises:
      FileNotFoundError / ValueError: naming the file if it is missing or unreadable.
    """
    from lhotse import Fbank, FbankConfig, Recording

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such audio file")
    try:
        rec = Recording.from_file(path)
        if rec.sampling_rate != SAMPLE_RATE:
            rec = rec.resample(SAMPLE_RATE)
        audio = rec.load_audio().mean(axis=0)  # (channels, samples) -> mono
    except Exception as e:
        raise ValueError(f"{path}: cannot read audio ({e})") from None
    feats = Fbank(FbankConfig(num_mel_bins=80)).extract(audio.astype("float32"), SAMPLE_RATE)
    return torch.from_numpy(feats)


def load_model(args) -> tuple:
    saved = read_checkpoint(args.checkpoint)
    if "model_type" not in saved:
        raise ValueError(f"{args.checkpoint} was not written by train.py (no model_type)")
    params = AttributeDict({k: v for k, v in saved.items() if k not in ("model", "model_avg", "optimizer",
                                                                      "scheduler", "grad_scaler", "sampler")})
    if params.model_type == "lm":
        raise ValueError(f"{args.checkpoint} is a language model (--model-type lm); it cannot transcribe audio")
    if args.bpe_model:
        params.bpe_model = args.bpe_model
    model, tokenizers = recipe.get_model(params, load_pretrained=False)
    key = "model_avg" if args.use_averaged_model else "model"
    if key not in saved:
        raise ValueError(f"{args.checkpoint} has no {key}")
    load_state_dict_checked(model, saved[key], f"{args.checkpoint}[{key}]",
                            allow_missing=bool(saved.get("trainable_only")))
    return params, model.eval(), tokenizers


def transcribe(params, model, tokenizers, feats: torch.Tensor, args) -> str:
    """Transcript of one (T, 80) fbank tensor, or `<NOTE>` when recipe.recognize skips it."""
    params = AttributeDict(params, decoding_method=args.decoding_method, beam_size=args.beam_size,
                           max_new_tokens=args.max_new_tokens, ctc_weight=args.ctc_weight)
    hyps, notes = recipe.recognize(params, model, tokenizers, feats.unsqueeze(0),
                                   torch.tensor([feats.shape[0]]))
    return f"<{notes[0]}>" if notes[0] == recipe.NOTE_SKIPPED else hyps[0].strip()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    args = get_parser().parse_args()
    try:
        params, model, tokenizers = load_model(args)
        for path in args.files:
            feats = load_fbank(path)
            print(f"{path}\t{transcribe(params, model, tokenizers, feats, args)}", flush=True)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"transcribe.py: error: {e}")


if __name__ == "__main__":
    main()
