#!/usr/bin/env python3
"""Compute 80-dim log-mel fbank (lhotse.Fbank, 25 ms window, 10 ms shift = 100 Hz) for cut manifests.

Usage (from the repository root):
  python local/compute_fbank.py --src-dir data/manifests --output-dir data/fbank --prefix tts_en \\
      --splits "train dev test" --perturb-speed-splits train --nj 2

For each split, reads {src-dir}/{prefix}_cuts_{split}.jsonl.gz and writes the features to
{output-dir}/{prefix}_feats_{split}/ (lilcom, LilcomChunkyWriter) and the cuts that reference them to
{output-dir}/{prefix}_cuts_{split}.jsonl.gz. Splits named in --perturb-speed-splits also get speed
perturbed copies at 0.9 and 1.1 (ids suffixed `_sp0.9` / `_sp1.1`), i.e. 3x the audio (icefall).
A split whose output cuts already exist is left alone. Feature paths in the written cuts are relative
to {output-dir} (`relative_feature_paths`), so the data folder can be moved or mounted elsewhere.
"""
import argparse
import logging
import os
import sys
from pathlib import Path

import torch
from lhotse import CutSet, LilcomChunkyWriter, load_manifest

from zipformer_rwkv.dataset.features import fbank_extractor

# Below this much audio per job, one process is faster (fbank runs at ~400x real time per core).
MIN_SECONDS_PER_JOB = 1800.0
# Each worker process computes one chunk; more torch threads per process only oversubscribe the CPU.
torch.set_num_threads(1)
torch.set_num_interop_threads(1)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src-dir", type=Path, default=Path("data/manifests"))
    p.add_argument("--output-dir", type=Path, default=Path("data/fbank"))
    p.add_argument("--prefix", required=True, help="corpus name, e.g. tts_en or librispeech")
    p.add_argument("--splits", required=True, help="space-separated split names")
    p.add_argument("--perturb-speed-splits", default="", help="splits that get 0.9/1.1 speed perturbation")
    p.add_argument("--nj", type=int, default=2, help="parallel feature extraction processes")
    return p


def compute_fbank(cuts: CutSet, storage_path: Path, nj: int) -> CutSet:
    """Compute and store fbank for `cuts`.

    Args:
      cuts: cuts with recordings (16 kHz, or with a resample transform).
      storage_path: lilcom storage folder/file prefix.
      nj: worker processes (1 = in this process); 1 is used when there is less than
        MIN_SECONDS_PER_JOB of audio per job.
    Returns:
      the cuts with `features` set; each has num_frames = round(duration * 100) and num_features = 80.
    """
    extractor = fbank_extractor()
    Path(storage_path).parent.mkdir(parents=True, exist_ok=True)
    if sum(c.duration for c in cuts) < MIN_SECONDS_PER_JOB * nj:
        nj = 1  # starting worker processes (spawn + torch import) would cost more than it saves
    return cuts.compute_and_store_features(extractor=extractor, storage_path=storage_path,
                                           num_jobs=nj if nj > 1 else None,
                                           storage_type=LilcomChunkyWriter)


def relative_feature_paths(cuts: CutSet, manifest_dir: Path) -> CutSet:
    """`cuts` with each feature storage path relative to `manifest_dir`, the folder their manifest
    is written to (AsrDataModule reads them back relative to that folder)."""
    base = Path(manifest_dir).resolve()

    def rel(c):
        if c.has_features:
            c.features.storage_path = os.path.relpath(Path(c.features.storage_path).resolve(), base)
        return c

    return CutSet.from_cuts(rel(c) for c in cuts)


def main() -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s [%(filename)s:%(lineno)d] %(message)s",
                        level=logging.INFO)
    args = get_parser().parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    perturb = set(args.perturb_speed_splits.split())
    for split in args.splits.split():
        src = args.src_dir / f"{args.prefix}_cuts_{split}.jsonl.gz"
        out = args.output_dir / f"{args.prefix}_cuts_{split}.jsonl.gz"
        if out.is_file():
            logging.info(f"{out} exists, skipping")
            continue
        if not src.is_file():
            logging.error(f"cut manifest not found: {src} (run prepare.sh stage 1)")
            return 1
        cuts = load_manifest(src)
        if split in perturb:
            logging.info(f"{split}: adding speed perturbation 0.9 and 1.1")
            cuts = cuts + cuts.perturb_speed(0.9) + cuts.perturb_speed(1.1)
        hours = sum(c.duration for c in cuts) / 3600
        logging.info(f"{split}: {len(cuts)} cuts, {hours:.2f} h")
        cuts = compute_fbank(cuts, args.output_dir / f"{args.prefix}_feats_{split}", args.nj)
        relative_feature_paths(cuts, args.output_dir).to_file(out)
        logging.info(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
