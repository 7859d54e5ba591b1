#!/usr/bin/env python3
"""What the training data pipeline costs per audio second: precomputed fbank, on-the-fly fbank,
on-the-fly fbank with audio augmentation (the conf's `augment:` block). Only the loader (cut
transforms, audio reading, augmentation, fbank, collation), no model: the CPU seconds it adds to
each training step when it runs in the training process (--num-workers 0), or that a DataLoader
worker must find on a shared 2-core machine.

Usage (from the folder prepare.sh ran in):
  python bench/bench_augment.py --conf egs/tts_en/conf.yaml --manifest-dir data/fbank \
      --variant otf:--on-the-fly-feats=true --variant aug:--conf=my_augment_conf.yaml --batches 20

Each side is a list of datamodule options added to the common ones (NAME:OPT=VALUE[,OPT=VALUE]);
"precomputed" (no options added) always runs first. The sides alternate --repeats times; the
table gives each side's median audio seconds per CPU second (process time, one torch thread: less
disturbed by other work on the machine than wall time) and per wall second.

  python bench/bench_augment.py --per-step my_augment_conf.yaml --cuts 60
times each augmentation step of that conf alone (its p set to 1, the others to 0) on the audio of
the first --cuts training cuts: CPU milliseconds per audio second.
"""
import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule, load_data_conf, set_train_epoch
from zipformer_rwkv.dataset.augment import AudioAugmenter

STEPS = ["p_reverb", "p_noise", "p_eq", "p_telephone", "p_codec", "p_gain"]


def side_args(common: list, extra: list) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    AsrDataModule.add_arguments(p)
    return p.parse_args(common + extra)


def measure(args: argparse.Namespace, batches: int, epoch: int) -> dict:
    """Draw `batches` training batches (after one untimed); returns audio seconds, CPU and wall seconds."""
    dm = AsrDataModule(args)
    dl = dm.train_dataloaders(dm.train_cuts())
    set_train_epoch(dl, epoch)
    it = iter(dl)
    next(it)
    audio, done = 0.0, 0
    cpu0, wall0 = time.process_time(), time.time()
    for batch in it:
        audio += float(batch["supervisions"]["num_frames"].sum()) / 100
        done += 1
        if done == batches:
            break
    cpu, wall = time.process_time() - cpu0, time.time() - wall0
    if done < batches:
        print(f"bench_augment.py: only {done} batches after the first (use fewer --batches or more data)",
              file=sys.stderr)
    return {"audio": audio, "cpu": cpu, "wall": wall, "batches": done}


def per_step(conf_path: Path, manifest_dir: Path, num_cuts: int) -> None:
    """Print the CPU cost of each augmentation step of `conf_path` alone (module docstring)."""
    import dataclasses

    conf = load_data_conf(conf_path)
    dm = AsrDataModule(side_args(["--conf", str(conf_path), "--manifest-dir", str(manifest_dir)], []))
    audios = [(c.id, c.load_audio()[0]) for c in itertools.islice(iter(dm.train_cuts()), num_cuts)]
    seconds = sum(len(a) for _, a in audios) / 16000
    print(f"Augmentation steps of {conf_path} alone, {len(audios)} cuts ({seconds:.0f} s of audio), 1 thread")
    print("| step | CPU ms per audio s |")
    print("|---|---|")
    for step in ["all (the conf's p)"] + STEPS:
        c = conf.augment if step.startswith("all") else dataclasses.replace(
            conf.augment, **{k: 1.0 if k == step else 0.0 for k in STEPS})
        aug = AudioAugmenter(c, manifest_dir)
        [aug(a, f"0|0|{cid}") for cid, a in audios[:2]]  # warm caches (files, imports)
        cpu0 = time.process_time()
        for cid, a in audios:
            aug(a, f"0|1|{cid}")
        print(f"| {step} | {1000 * (time.process_time() - cpu0) / seconds:.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conf", type=Path, default=Path("egs/tts_en/conf.yaml"))
    p.add_argument("--manifest-dir", type=Path, default=Path("data/fbank"))
    p.add_argument("--max-duration", type=float, default=30.0)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variant", action="append", default=[], metavar="NAME:OPT=VALUE[,OPT=VALUE]")
    p.add_argument("--per-step", type=Path, default=None, metavar="CONF",
                   help="instead: time each augmentation step of CONF alone")
    p.add_argument("--cuts", type=int, default=60, help="cuts for --per-step")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.per_step is not None:
        per_step(args.per_step, args.manifest_dir, args.cuts)
        return 0
    common = ["--conf", str(args.conf), "--manifest-dir", str(args.manifest_dir), "--num-workers", "0",
              "--max-duration", str(args.max_duration), "--enable-spec-aug", "false"]
    sides = [("precomputed", [])]
    for v in args.variant:
        name, sep, opts = v.partition(":")
        if not sep or not name or not opts:
            sys.exit(f"bench_augment.py: --variant {v}: expected NAME:OPT=VALUE[,OPT=VALUE]")
        sides.append((name, [a for o in opts.split(",") for a in o.split("=", 1)]))
    runs = {name: [] for name, _ in sides}
    for r in range(args.repeats):
        for name, extra in sides:
            res = measure(side_args(common, extra), args.batches, epoch=r)
            runs[name].append(res)
            print(f"... {name}: {res['audio'] / res['cpu']:.1f} audio s per CPU s, "
                  f"{res['audio'] / res['wall']:.1f} per wall s ({res['batches']} batches, {res['audio']:.0f} s)",
                  flush=True)
    print(f"\nTraining data pipeline, {args.batches} batches of --max-duration {args.max_duration} s after one "
          f"untimed; 1 torch thread; median of {args.repeats}")
    print("| side | options | audio s / CPU s | audio s / wall s | CPU ms per audio s |")
    print("|---|---|---|---|---|")
    for name, extra in sides:
        per_cpu = statistics.median(x["audio"] / x["cpu"] for x in runs[name])
        per_wall = statistics.median(x["audio"] / x["wall"] for x in runs[name])
        print(f"| {name} | {' '.join(extra) or '-'} | {per_cpu:.1f} | {per_wall:.1f} | {1000 / per_cpu:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
