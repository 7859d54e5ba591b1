#!/usr/bin/env python3
"""Synthesis speed per TTS engine: seconds of audio per CPU-second (worker + child processes), one core.

Each engine first speaks one warm-up sentence (model loading is not counted), then --num-utts
sentences in one job, as make_tts_corpus.py's workers do; the cache is off.

Usage:
    python local/bench_voices.py --text download/tts_en/lm_text.txt --num-utts 20

(In local/, beside the voice bank it measures: run as a script, local/ is on the import path.)
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tts_corpus import synth, voicebank, voices  # importable: a script in local/ runs with local/ first on the path
from tts_corpus.voices import Voice

DEFAULT_VOICES = ["espeak:en-us+m1", "flite:awb", "flite:slt", "festival:kal_diphone",
                  "festival:cmu_us_slt_arctic_hts", "festival:rab_diphone", "mbrola:us1", "rhvoice:bdl",
                  "piper:en_US-joe-medium", "kokoro:af_heart"]
FALLBACK = ["It is a truth universally acknowledged that a single man must be in want of a wife.",
            "The weather was fine and the roads were dry when they set out for the village."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, default=None, help="one sentence a line (e.g. lm_text.txt)")
    p.add_argument("--num-utts", type=int, default=20)
    p.add_argument("--voices", nargs="+", default=DEFAULT_VOICES, help="engine:name ...")
    args = p.parse_args()
    lines = args.text.read_text().splitlines() if args.text else FALLBACK
    sents = [s.capitalize() + "." for s in lines if 8 <= len(s.split()) <= 20][1000:1000 + args.num_utts + 1]
    sents = (sents or FALLBACK * (args.num_utts // 2 + 1))[:args.num_utts + 1]
    print("| engine | voice | utts | audio s | CPU s | x real time per CPU-s | wall s |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.voices:
        voice = Voice(*spec.split(":", 1))
        try:
            voicebank.check(voice)
        except voicebank.VoicePackageError as e:
            print(f"| {voice.engine} | {voice.name} | skipped: {e} |||||")
            continue
        with tempfile.TemporaryDirectory() as d:
            utts = [synth.Utterance(f"u{i}", s, f"{d}/u{i}.flac", voices.sample_params(voice, f"b/{i}"))
                    for i, s in enumerate(sents)]
            synth.run_job(synth.SynthJob(voice, tuple(utts[:1])))  # warm-up: loads models
            t0 = time.time()
            res = synth.run_job(synth.SynthJob(voice, tuple(utts[1:])))
            wall = time.time() - t0
        ok = [r for r in res if r.duration]
        audio, cpu = sum(r.duration for r in ok), sum(r.cpu_s for r in res)
        print(f"| {voice.engine} | {voice.name} | {len(ok)} | {audio:.1f} | {cpu:.1f} | {audio / cpu:.1f} | "
              f"{wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
