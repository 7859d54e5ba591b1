#!/usr/bin/env python3
"""Noise cuts with fbank for CutMix: MUSAN when it is there, else the built-in noise set.

Usage (from the repository root):
  python local/compute_fbank_noise.py --musan-dir download/musan --output-dir data/fbank
  python local/compute_fbank_noise.py --noise-manifest download/tts_en_noise/noise.jsonl \\
      --name tts_en_noise --min-duration 2 --output-dir data/fbank

MUSAN (icefall's recipe): `lhotse.recipes.prepare_musan` for music, speech and noise, all recordings
cut into 10 s windows, windows of <= --min-duration (5 s) dropped -> {output-dir}/musan_cuts.jsonl.gz.
Built-in noise (local/prepare_noise.py): the NeMo noise.jsonl is imported like any manifest (bad lines
reported in {manifest-dir}/{name}_skipped.txt), then windowed and filtered the same way ->
{output-dir}/{name}_cuts.jsonl.gz. Features: 80-dim lhotse.Fbank, LilcomChunkyWriter.
"""
import argparse
import logging
import sys
from pathlib import Path

from lhotse import CutSet, combine
from lhotse.recipes import prepare_musan

from compute_fbank import compute_fbank, relative_feature_paths
from import_manifest import import_manifest


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--musan-dir", type=Path, help="the musan/ folder (music/, speech/, noise/)")
    src.add_argument("--noise-manifest", type=Path, help="NeMo noise.jsonl of local/prepare_noise.py")
    p.add_argument("--name", default=None, help="output name (default: musan, or the manifest's folder name)")
    p.add_argument("--manifest-dir", type=Path, default=Path("data/manifests"))
    p.add_argument("--output-dir", type=Path, default=Path("data/fbank"))
    p.add_argument("--window", type=float, default=10.0, help="window length in seconds")
    p.add_argument("--min-duration", type=float, default=5.0, help="keep windows longer than this (s)")
    p.add_argument("--nj", type=int, default=2)
    return p


def main() -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s",
                        level=logging.INFO)
    args = get_parser().parse_args()
    if args.musan_dir is not None:
        name = args.name or "musan"
        if not args.musan_dir.is_dir():
            logging.error(f"MUSAN folder not found: {args.musan_dir}")
            return 1
        manifests = prepare_musan(args.musan_dir, output_dir=args.manifest_dir)
        recordings = combine(m["recordings"] for m in manifests.values())
        cuts = CutSet.from_manifests(recordings=recordings)
    else:
        name = args.name or args.noise_manifest.parent.name
        try:
            cuts, _ = import_manifest(args.noise_manifest, "nemo", args.manifest_dir, name, no_text=True)
        except (FileNotFoundError, ValueError) as e:
            logging.error(str(e))
            return 1
    cuts = CutSet.from_cuts(c for c in cuts.cut_into_windows(args.window) if c.duration > args.min_duration)
    if len(cuts) == 0:
        logging.error(f"no noise window longer than {args.min_duration} s")
        return 1
    logging.info(f"{name}: {len(cuts)} noise windows, {sum(c.duration for c in cuts) / 3600:.2f} h")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    cuts = compute_fbank(cuts, args.output_dir / f"{name}_feats", args.nj)
    out = args.output_dir / f"{name}_cuts.jsonl.gz"
    relative_feature_paths(cuts, args.output_dir).to_file(out)
    logging.info(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
