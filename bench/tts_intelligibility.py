#!/usr/bin/env python3
"""How intelligible are the corpus voices to a classic recogniser? pocketsphinx WER per voice group.

A yardstick only (pocketsphinx is no dependency of this project: `pip install pocketsphinx`): it
decodes every FLAC of make_tts_corpus.py's manifests with its bundled en-us model and default
settings, and prints the WER of each engine (Kokoro by accent and sex: af, am, bf, bm; RHVoice,
MBROLA and Piper by voice), counted with kaldialign against the manifest transcripts.

Usage:
    python bench/tts_intelligibility.py download/tts_en [--splits train dev test]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import kaldialign
import soundfile as sf


def group(entry: dict) -> str:
    """The voice group an utterance is counted in, e.g. ``kokoro:bf``, ``rhvoice:alan``, ``flite``."""
    engine, voice = entry["engine"], entry["voice"]
    if engine == "kokoro":
        return f"kokoro:{voice[:2]}"
    return f"{engine}:{voice}" if engine in ("rhvoice", "mbrola", "piper") else engine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus_dir", type=Path)
    p.add_argument("--splits", nargs="+", default=["train", "dev", "test"])
    args = p.parse_args()
    try:
        from pocketsphinx import Decoder
    except ImportError:
        sys.exit("tts_intelligibility.py: needs pocketsphinx (pip install pocketsphinx)")
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    errors, words = defaultdict(int), defaultdict(int)
    for split in args.splits:
        for line in open(args.corpus_dir / f"{split}.jsonl", encoding="utf-8"):
            entry = json.loads(line)
            audio, _ = sf.read(str(args.corpus_dir / entry["audio_filepath"]), dtype="int16")
            decoder.start_utt()
            decoder.process_raw(audio.tobytes(), full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp().hypstr.upper().split() if decoder.hyp() else []
            ref = entry["text"].split()
            errors[group(entry)] += sum(r != h for r, h in kaldialign.align(ref, hyp, "*"))
            words[group(entry)] += len(ref)
    print("| voices | words | pocketsphinx WER % |\n|---|---|---|")
    for g in sorted(words):
        print(f"| {g} | {words[g]} | {100 * errors[g] / words[g]:.1f} |")


if __name__ == "__main__":
    main()
