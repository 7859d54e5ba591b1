#!/usr/bin/env python3
"""A toy NeMo corpus of synthetic audio (tones + noise), for tests and pipeline smoke runs.

Usage:
  python local/make_toy_corpus.py --out-dir /tmp/toy --num-utts "train=12 dev=4 test=4" --seed 0

Writes {out-dir}/{split}/{id}.flac (16 kHz mono) and {out-dir}/{split}.jsonl NeMo manifests
(`audio_filepath` relative to out-dir, `duration`, `text`, `id`, `speaker`) plus {out-dir}/lm_text.txt.
Transcripts are random upper-case word sequences; no sentence is in two splits. The audio carries no
speech: it only exercises the data pipeline.
"""
import argparse
import json
import random
from pathlib import Path
from typing import Dict

import numpy as np
import soundfile as sf

WORDS = ("THE A OF AND TO IN HER WAS SHE HE IT NOT BE HAD YOU AS FOR WITH HIS BUT AT SO MY ALL "
         "VERY COULD WOULD MISTER ELIZABETH EMMA ANNE SISTER HOUSE LETTER MORNING EVENING "
         "DON'T COULDN'T FRIEND HAPPY WALK GARDEN").split()


def make_toy_corpus(out_dir: Path, num_utts: Dict[str, int], seed: int = 0, sampling_rate: int = 16000,
                    min_duration: float = 1.2, max_duration: float = 3.0) -> Dict[str, Path]:
    """Write the toy corpus; returns split -> manifest path."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    used = set()
    manifests = {}
    for split, n in num_utts.items():
        (out_dir / split).mkdir(exist_ok=True)
        lines = []
        for i in range(n):
            while True:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
                if text not in used:
                    used.add(text)
                    break
            dur = round(rng.uniform(min_duration, max_duration), 2)
            spk = f"spk{rng.randint(0, 3)}"
            t = np.arange(int(dur * sampling_rate)) / sampling_rate
            f0 = 120 + 40 * int(spk[-1])
            x = 0.2 * np.sin(2 * np.pi * f0 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
            x += 0.02 * nrng.standard_normal(t.shape)
            uid = f"{split}-{i:04d}"
            sf.write(out_dir / split / f"{uid}.flac", x.astype(np.float32), sampling_rate)
            lines.append({"audio_filepath": f"{split}/{uid}.flac", "duration": dur, "text": text,
                          "id": uid, "speaker": spk})
        manifests[split] = out_dir / f"{split}.jsonl"
        with open(manifests[split], "w", encoding="utf-8") as f:
            for d in lines:
                f.write(json.dumps(d) + "\n")
    with open(out_dir / "lm_text.txt", "w", encoding="utf-8") as f:
        for _ in range(50):
            f.write(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "\n")
    return manifests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--num-utts", default="train=12 dev=4 test=4", help="'split=N ...'")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    num = {k: int(v) for k, v in (x.split("=") for x in args.num_utts.split())}
    make_toy_corpus(args.out_dir, num, args.seed)


if __name__ == "__main__":
    main()
