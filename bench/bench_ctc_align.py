#!/usr/bin/env python3
"""Speed of the CTC forced alignment (`speechllm/ctc_align.py`) that the interleaved speech LLM runs
on every training and validation batch. Prints a table: batch shape, milliseconds per batch (median
of --repeats), and seconds of audio aligned per wall second (encoder frames at 25 Hz).

Usage (from the repository root):
  python bench/bench_ctc_align.py                        # the shapes of run.sh's default stage 4
  python bench/bench_ctc_align.py --num-threads 1 --repeats 5

Random log-posteriors over a 500-token vocabulary and random transcripts: the Viterbi's cost depends
on N, T and the transcript length U (2U+1 states), not on the values.
"""
import argparse
import statistics
import time

import torch

from zipformer_rwkv.speechllm.ctc_align import ctc_forced_align

# (N, T frames at 25 Hz, U tokens): a stage-4 batch of --max-duration 80 (8 x 10 s, ~3.5 BPE
# tokens per second), a batch of 30 s utterances, and one of short commands
SHAPES = ((8, 250, 35), (2, 750, 100), (32, 50, 8))


def main() -> None:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vocab-size", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    g = torch.Generator().manual_seed(0)
    print(f"| N | T (25 Hz) | U | ms / batch | audio s / s |   ({args.num_threads} threads)")
    print("|---|---|---|---|---|")
    for n, t, u in SHAPES:
        log_probs = torch.randn(n, t, args.vocab_size, generator=g).log_softmax(-1)
        lens = torch.full((n,), t)
        targets = [torch.randint(1, args.vocab_size, (u,), generator=g).tolist() for _ in range(n)]
        ctc_forced_align(log_probs, lens, targets)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ctc_forced_align(log_probs, lens, targets)
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        print(f"| {n} | {t} | {u} | {1000 * sec:.1f} | {n * t / 25 / sec:.0f} |")


if __name__ == "__main__":
    main()
