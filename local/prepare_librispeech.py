#!/usr/bin/env python3
"""LibriSpeech -> lhotse manifests (recordings, supervisions, cuts) with lhotse's recipe.

Usage (from the repository root):
  python local/prepare_librispeech.py --corpus-dir download/LibriSpeech --output-dir data/manifests \\
      --parts "train-clean-100 dev-clean test-clean" --nj 2

Reads the standard layout `LibriSpeech/{part}/{speaker}/{chapter}/{speaker}-{chapter}-{utt}.flac` with
`{speaker}-{chapter}.trans.txt`, through `lhotse.recipes.prepare_librispeech`, and writes
`librispeech_{recordings,supervisions,cuts}_{part}.jsonl.gz` in --output-dir.
Exit status 1 (with one line naming the folder) when a part is missing or holds no utterance.
"""
import argparse
import logging
import sys
from pathlib import Path

from lhotse import CutSet
from lhotse.recipes import prepare_librispeech


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-dir", type=Path, required=True, help="the LibriSpeech/ folder")
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--parts", required=True, help="space-separated part names, e.g. 'dev-clean test-clean'")
    p.add_argument("--nj", type=int, default=1)
    return p


def main() -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s",
                        level=logging.INFO)
    args = get_parser().parse_args()
    parts = args.parts.split()
    for part in parts:
        if not (args.corpus_dir / part).is_dir():
            logging.error(f"LibriSpeech part {part} not found: {args.corpus_dir / part} is not a folder "
                          f"(download it, or remove it from the corpus conf)")
            return 1
    manifests = prepare_librispeech(args.corpus_dir, dataset_parts=parts, output_dir=args.output_dir,
                                    num_jobs=args.nj)
    for part in parts:
        m = manifests.get(part)
        if not m or len(m["supervisions"]) == 0:
            logging.error(f"{args.corpus_dir / part}: no utterance found (expected *.trans.txt + *.flac)")
            return 1
        cuts = CutSet.from_manifests(recordings=m["recordings"], supervisions=m["supervisions"])
        out = args.output_dir / f"librispeech_cuts_{part}.jsonl.gz"
        cuts.to_file(out)
        logging.info(f"{part}: {len(cuts)} cuts, {sum(c.duration for c in cuts) / 3600:.2f} h -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
