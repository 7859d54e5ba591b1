#!/usr/bin/env python3
"""Write the transcripts of cut manifests, one supervision per line (e.g. transcript_words.txt).

Usage:
  python local/export_transcripts.py --output data/lang_bpe_500/transcript_words.txt \\
      data/manifests/tts_en_cuts_train.jsonl.gz [more cut manifests ...]

Speed-perturbed copies (`_sp0.9`, `_sp1.1`) are not in data/manifests, so each sentence appears as
often as it was recorded. Empty transcripts are left out.
"""
import argparse
import sys
from pathlib import Path

from lhotse import load_manifest_lazy


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("cuts", type=Path, nargs="+")
    args = p.parse_args()
    for c in args.cuts:
        if not c.is_file():
            print(f"{p.prog}: cut manifest not found: {c}", file=sys.stderr)
            return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(args.output, "w", encoding="utf-8") as f:
        for c in args.cuts:
            for cut in load_manifest_lazy(c):
                for s in cut.supervisions:
                    text = " ".join((s.text or "").split())
                    if text:
                        f.write(text + "\n")
                        n += 1
    print(f"{p.prog}: wrote {n} lines to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
