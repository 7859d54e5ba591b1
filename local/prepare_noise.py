#!/usr/bin/env python3
"""Make an offline noise set for the built-in corpus: sox coloured noise and TTS babble.

Stands in for MUSAN where none can be downloaded. Kinds:
  white / pink / brown   ``sox -R`` (repeatable) noise; each file is a different window of the stream
                         with a random high-pass, low-pass and tremolo, peak-normalised to -20..-6 dBFS
  babble                 3..7 overlapping talkers; sentences from --text (the built-in corpus's
                         lm_text.txt, i.e. in no train/dev/test split) read by voices used in no split
                         (local/tts_corpus/voices.py NOISE_VOICES), looped and summed at random levels;
                         without --text (an imported corpus on a fresh --dl-dir) only coloured noise

Usage:
    python local/prepare_noise.py --out-dir download/tts_en_noise --text download/tts_en/lm_text.txt --size tiny

Writes into --out-dir: <id>.flac (16 kHz mono 16-bit), noise.jsonl (NeMo lines: audio_filepath relative
to --out-dir, duration in seconds, text "", id, noise_type), skipped.txt (babble sentences the TTS
could not speak) and summary.json.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from tts_corpus.synth import SAMPLE_RATE, SynthJob, Utterance, run_jobs
from tts_corpus.voices import NOISE_VOICES, sample_params

COLOURS = ("white", "pink", "brown")
# per size: (files per colour, babble files, babble sentence bank, (min, max) seconds per file)
SIZES = {"tiny": (2, 3, 16, (5.0, 8.0)), "default": (30, 60, 240, (10.0, 30.0))}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path("download/tts_en_noise"))
    p.add_argument("--text", type=Path, default=None,
                   help="sentences for babble, one per line; must hold no train/dev/test sentence; "
                        "none: no babble, coloured noise only")
    p.add_argument("--size", choices=sorted(SIZES), default="default")
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    return p


def coloured_noise(out: Path, colour: str, duration: float, rng: random.Random) -> str | None:
    """Write one coloured-noise FLAC of ``duration`` seconds; returns an error line or ``None``."""
    offset = round(rng.uniform(0, 120), 3)  # a different window of sox's repeatable noise stream
    cmd = ["sox", "-R", "-q", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out),
           "synth", f"{offset + duration:.3f}", f"{colour}noise", "trim", f"{offset:.3f}",
           "highpass", str(rng.randint(20, 300)), "lowpass", str(rng.randint(2000, 7500)),
           "tremolo", f"{rng.uniform(0.1, 4):.2f}", f"{rng.uniform(0, 40):.1f}",
           "gain", "-n", f"{rng.uniform(-20, -6):.1f}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return f"sox failed: {proc.stderr.strip()}" if proc.returncode != 0 else None


def babble(clips: list[np.ndarray], num_samples: int, rng: random.Random) -> np.ndarray:
    """Sum 3..7 talkers, each a random clip sequence looped to ``num_samples``, at -6..0 dB; (num_samples,) int16."""
    mix = np.zeros(num_samples)
    for _ in range(rng.randint(3, min(7, len(clips)))):
        track, n = [], rng.randrange(SAMPLE_RATE)  # random start gap for each talker
        track.append(np.zeros(n))
        while n < num_samples:
            clip = clips[rng.randrange(len(clips))].astype(np.float64)
            clip /= max(np.sqrt(np.mean(clip ** 2)), 1.0)
            track.append(clip)
            n += len(clip)
        mix += np.concatenate(track)[:num_samples] * 10 ** (rng.uniform(-6, 0) / 20)
    peak = np.max(np.abs(mix)) or 1.0
    return (mix / peak * 32767 * 10 ** (rng.uniform(-12, -3) / 20)).astype(np.int16)


def main(argv: list[str] | None = None) -> dict:
    args = get_parser().parse_args(argv)
    if args.text is not None and not args.text.is_file():
        sys.exit(f"prepare_noise.py: {args.text}: no such file (run local/make_tts_corpus.py first or pass --text)")
    sentences = ([] if args.text is None else
                 [ln.strip() for ln in args.text.read_text(encoding="utf-8").splitlines() if ln.strip()])
    n_colour, n_babble, n_bank, (dmin, dmax) = SIZES[args.size]
    if args.text is None:
        print("prepare_noise.py: no --text: coloured noise only, no babble", file=sys.stderr)
    elif len(sentences) < n_bank:
        sys.exit(f"prepare_noise.py: {args.text}: {len(sentences)} sentences, need at least {n_bank} for babble")
    start, rng = time.time(), random.Random(args.seed)
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.flac"):
        stale.unlink()

    # Coloured noise (sox subprocesses; threads suffice).
    plan = [(f"{c}-{i:04d}", c, round(rng.uniform(dmin, dmax), 2), random.Random(f"{args.seed}/{c}/{i}"))
            for c in COLOURS for i in range(n_colour)]
    with ThreadPoolExecutor(max(1, args.nj)) as ex:
        errors = list(ex.map(lambda p: coloured_noise(out_dir / f"{p[0]}.flac", *p[1:]), plan))
    for (nid, *_), err in zip(plan, errors):
        if err:
            sys.exit(f"prepare_noise.py: {out_dir / nid}.flac: {err}")
    entries = [{"id": nid, "noise_type": c} for nid, c, _, _ in plan]

    skipped, clips = ["# utt_id\tspeaker\treason\ttext"], []
    if args.text is not None:  # babble: a bank of TTS clips from held-apart sentences and voices, mixed
        with tempfile.TemporaryDirectory(prefix="babble_") as tmp:
            bank = sorted(random.Random(f"{args.seed}/babble").sample(sentences, n_bank))
            random.Random(f"{args.seed}/babble-order").shuffle(bank)
            jobs, texts = [], {}
            for v_idx, voice in enumerate(NOISE_VOICES):
                utts = []
                for k, text in enumerate(bank[v_idx::len(NOISE_VOICES)]):
                    uid = f"{voice.speaker}-babble-{k:04d}"
                    texts[uid] = (voice.speaker, text)
                    utts.append(Utterance(uid, text.capitalize() + ".", str(Path(tmp) / f"{uid}.flac"),
                                          sample_params(voice, f"{args.seed}/{voice.speaker}/{uid}")))
                if utts:
                    jobs.append(SynthJob(voice, tuple(utts)))
            results = run_jobs(jobs, args.nj, desc="babble tts")
            clips = []
            for uid in sorted(results):
                r = results[uid]
                if r.duration is None:
                    skipped.append("\t".join([uid, texts[uid][0], r.reason, texts[uid][1]]))
                else:
                    clips.append(sf.read(str(Path(tmp) / f"{uid}.flac"), dtype="int16")[0])
            if len(clips) < 3:
                sys.exit(f"prepare_noise.py: only {len(clips)} babble clips could be synthesised (see skipped.txt)")
            for i in range(n_babble):
                b_rng = random.Random(f"{args.seed}/babble/{i}")
                audio = babble(clips, int(round(b_rng.uniform(dmin, dmax), 2) * SAMPLE_RATE), b_rng)
                sf.write(str(out_dir / f"babble-{i:04d}.flac"), audio, SAMPLE_RATE, subtype="PCM_16")
                entries.append({"id": f"babble-{i:04d}", "noise_type": "babble"})

    lines = []
    for e in entries:
        info = sf.info(str(out_dir / f"{e['id']}.flac"))
        lines.append({"audio_filepath": f"{e['id']}.flac", "duration": info.frames / info.samplerate,
                      "text": "", **e})
    with open(out_dir / "noise.jsonl", "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in lines)
    (out_dir / "skipped.txt").write_text("\n".join(skipped) + "\n")
    summary = {"seed": args.seed, "size": args.size, "files": len(lines), "skipped_babble_clips": len(skipped) - 1,
               "babble_clips": len(clips), "wall_time_s": round(time.time() - start, 1),
               "kinds": {k: {"files": sum(e["noise_type"] == k for e in lines),
                             "hours": round(sum(e["duration"] for e in lines if e["noise_type"] == k) / 3600, 4)}
                         for k in (*COLOURS, "babble")}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"noise: {summary['files']} files, {sum(k['hours'] for k in summary['kinds'].values()):.3f} h, "
          f"wall time {summary['wall_time_s']} s; wrote {out_dir}")
    return summary


if __name__ == "__main__":
    main()
