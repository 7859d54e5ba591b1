#!/usr/bin/env python3
"""Zipformer2 encoder speed on CPU: forward time per second of audio (RTF) and peak memory.

Usage (from the repo root):
  python bench/bench_encoder.py                          # small + medium, batch 1 and 8, 10 s
  python bench/bench_encoder.py --configs medium --batch-sizes 8 --threads 2 --repeats 3
  python bench/bench_encoder.py --train --configs small --batch-sizes 8   # training step speed
  python bench/bench_encoder.py --configs small --encoder-embed-channels 128,32   # encoder_embed widths

Random weights (speed does not depend on the values), random 80-dim fbank at 100 Hz, fp32,
eval mode, torch.no_grad(); with --train: train mode (dropout, Balancer/Whiten, layer skipping
active), one forward + backward of `encoder_out.sum()`. RTF = median wall time of one forward /
(batch * seconds of audio); "CPU-time RTF" uses the process CPU time (all threads) instead, which is
what to look at on a machine shared with other jobs (wall RTF on N free cores is then roughly
CPU-time RTF / N).
On a machine shared with other jobs, run with OMP_WAIT_POLICY=PASSIVE: with the default
(spinning) OpenMP threads wait for each other and 2 threads can be 4x slower than 1.
Peak RSS is the process high-water mark after each row (resource.getrusage), so it only grows
from row to row; "model MB" is the parameter size.
"""
import argparse
import os
import resource
import statistics
import time
from dataclasses import replace

import torch

from zipformer_rwkv.zipformer import ENCODER_CONFIGS, ZipformerEncoder


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="small,medium", help="comma-separated named configs")
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--seconds", type=float, default=10.0, help="audio length per utterance")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per row (median)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--train", action="store_true", help="time a training step (forward + backward)")
    p.add_argument("--encoder-embed-channels", default="128",
                   help="comma-separated encoder_embed widths (icefall: 128) to time each config with")
    return p


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_step(model: ZipformerEncoder, x: torch.Tensor, x_lens: torch.Tensor, train: bool) -> None:
    """One forward (x: (N, T, 80) fbank, x_lens: (N,)); with `train`, also the backward."""
    encoder_out, _ = model(x, x_lens)
    if train:
        model.zero_grad(set_to_none=True)
        encoder_out.sum().backward()


def main() -> None:
    args = get_parser().parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    frames = int(args.seconds * 100)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
          f"visible, load avg {os.getloadavg()[0]:.1f}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; input {args.seconds:g} s = {frames} frames")
    step = "forward+backward" if args.train else "forward"
    print(f"| config | embed channels | batch | {step} s (median) | RTF | x real time | CPU-time RTF | "
          "model MB | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    runs = [(n, int(c)) for n in args.configs.split(",") for c in args.encoder_embed_channels.split(",")]
    for name, channels in runs:
        torch.manual_seed(0)
        config = replace(ENCODER_CONFIGS[name], encoder_embed_channels=channels)
        model = ZipformerEncoder(config).train(args.train)
        model_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            x = torch.randn(bs, frames, 80)
            x_lens = torch.full((bs,), frames, dtype=torch.int64)
            times, cpu = [], []
            with torch.set_grad_enabled(args.train):
                warm = min(500, frames)
                run_step(model, x[:, :warm], torch.full((bs,), warm), args.train)  # warm-up
                for _ in range(args.repeats):
                    t0, c0 = time.perf_counter(), time.process_time()
                    run_step(model, x, x_lens, args.train)
                    times.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
            sec = statistics.median(times)
            rtf = sec / (bs * args.seconds)
            cpu_rtf = statistics.median(cpu) / (bs * args.seconds)
            print(f"| {name} | {channels} | {bs} | {sec:.3f} | {rtf:.4f} | {1 / rtf:.1f} | {cpu_rtf:.4f} | "
                  f"{model_mb:.0f} | {peak_rss_mb():.0f} |", flush=True)


if __name__ == "__main__":
    main()
