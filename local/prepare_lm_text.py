#!/usr/bin/env python3
"""Plain text for language-model pre-training: training transcripts + extra text, minus dev/test.

Usage (from the repository root):
  python local/prepare_lm_text.py --output-dir data/lm \\
      --text data/lang_bpe_500/transcript_words.txt download/tts_en/lm_text.txt \\
      --exclude-cuts data/manifests/tts_en_cuts_dev.jsonl.gz data/manifests/tts_en_cuts_test.jsonl.gz

Writes {output-dir}/train.txt and {output-dir}/valid.txt, one sentence per line, and prints counts.
  - Every sentence that is the transcript of an --exclude-cuts cut is removed (compared after
    normalisation: upper case, only letters/digits/apostrophes, single spaces), whatever the input
    files claim. The removed count is logged.
  - Duplicates (same normalised form) are kept once, first occurrence first.
  - With --lm-max-sentences N > 0, a seeded uniform random sample of N of those sentences is kept
    (input order preserved; same --seed, same sample), e.g. to make a tiny LM epoch short.
  - valid.txt is a held-out random slice (--valid-fraction, seeded) of that text, not the dev
    transcripts: dev/test sentences appear in neither file.
Sentences are written as they are in the input (whitespace collapsed).
"""
import argparse
import logging
import random
import re
import sys
from pathlib import Path
from typing import Iterable, List, Set

from lhotse import load_manifest_lazy


def norm_key(text: str) -> str:
    """Comparison key: upper case, characters other than letters, digits and `'` become spaces."""
    return " ".join(re.sub(r"[^\w']|_", " ", text.upper()).split())


def excluded_keys(cut_paths: Iterable[Path]) -> Set[str]:
    keys = set()
    for p in cut_paths:
        for cut in load_manifest_lazy(p):
            for s in cut.supervisions:
                if s.text and norm_key(s.text):
                    keys.add(norm_key(s.text))
    return keys


def build_lm_text(texts: List[Path], exclude: Set[str]) -> List[str]:
    """Read `texts` in order; drop empty lines, excluded sentences and duplicates.

    Raises:
      FileNotFoundError: a text file is missing.
      ValueError: a text file is not UTF-8 (names the file and line).
    """
    seen: Set[str] = set()
    out: List[str] = []
    removed = 0
    for path in texts:
        if not path.is_file():
            raise FileNotFoundError(f"text file not found: {path}")
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = " ".join(raw.decode("utf-8").split())
                except UnicodeDecodeError:
                    raise ValueError(f"{path}:{lineno}: not valid UTF-8") from None
                key = norm_key(line)
                if not key:
                    continue
                if key in exclude:
                    removed += 1
                    continue
                if key not in seen:
                    seen.add(key)
                    out.append(line)
    logging.info(f"removed {removed} dev/test sentences; {len(out)} unique sentences remain")
    return out


def cap_sentences(lines: List[str], max_sentences: int, seed: int) -> List[str]:
    """At most `max_sentences` of `lines` (all when <= 0 or already fewer): a uniform random sample
    drawn with `random.Random(seed)`, in input order.

    Raises:
      ValueError: max_sentences is 1 (train and valid need a sentence each).
    """
    if max_sentences <= 0 or len(lines) <= max_sentences:
        logging.info(f"--lm-max-sentences {max_sentences}: keeping all {len(lines)} sentences")
        return lines
    if max_sentences < 2:
        raise ValueError(f"--lm-max-sentences {max_sentences}: need at least 2 (train and valid)")
    keep = sorted(random.Random(seed).sample(range(len(lines)), max_sentences))
    logging.info(f"--lm-max-sentences {max_sentences}: kept a random {max_sentences} of {len(lines)} sentences")
    return [lines[i] for i in keep]


def main() -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s",
                        level=logging.INFO)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--text", type=Path, nargs="+", required=True, help="text files, one sentence per line")
    p.add_argument("--exclude-cuts", type=Path, nargs="*", default=[], help="dev/test cut manifests")
    p.add_argument("--valid-fraction", type=float, default=0.02)
    p.add_argument("--lm-max-sentences", type=int, default=0,
                   help="keep a seeded random sample of this many sentences (train + valid); 0 = all")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    try:
        for c in args.exclude_cuts:
            if not c.is_file():
                raise FileNotFoundError(f"cut manifest not found: {c}")
        lines = build_lm_text(args.text, excluded_keys(args.exclude_cuts))
        lines = cap_sentences(lines, args.lm_max_sentences, args.seed)
    except (FileNotFoundError, ValueError) as e:
        logging.error(str(e))
        return 1
    if len(lines) < 2:
        logging.error(f"only {len(lines)} LM sentences left; need at least 2 for train/valid")
        return 1
    n_valid = min(len(lines) - 1, max(1, round(args.valid_fraction * len(lines))))
    valid_idx = set(random.Random(args.seed).sample(range(len(lines)), n_valid))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with open(args.output_dir / "train.txt", "w", encoding="utf-8") as ft, \
            open(args.output_dir / "valid.txt", "w", encoding="utf-8") as fv:
        for i, line in enumerate(lines):
            (fv if i in valid_idx else ft).write(line + "\n")
    logging.info(f"wrote {len(lines) - n_valid} lines to {args.output_dir}/train.txt, "
                 f"{n_valid} to valid.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
