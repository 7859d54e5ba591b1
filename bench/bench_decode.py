#!/usr/bin/env python3
"""Decoding speed (RTFx = audio seconds / decoding seconds) of a trained speech LLM and its CTC
baseline on a test set: batch 1 and batched, greedy search and beam search. Prints a table.

Usage (from the folder run.sh ran in; same --epoch/--avg as run.sh stage 5 and stage 2):
  python bench/bench_decode.py --llm-exp-dir exp/llm --llm-epoch 4 --llm-avg 2 \
    --ctc-exp-dir exp/ctc --ctc-epoch 6 --ctc-avg 3 \
    --manifest-dir data/fbank --bpe-model data/lang_bpe_500/bpe.model --test-set test
  # also time joint CTC / RWKV-7 search (decode.py --ctc-weight; a speech LLM with a CTC head)
  python bench/bench_decode.py --llm-exp-dir exp/llm --llm-epoch 4 --llm-avg 2 --ctc-weight 0.7
  # fewer utterances / threads, GPU if present
  python bench/bench_decode.py --llm-exp-dir exp/llm --llm-epoch 4 --llm-avg 2 --max-utts 50 --num-threads 2

Each system is loaded as decode.py loads it (structure from the checkpoint; --use-averaged-model
true when its epoch > avg, as run.sh decodes it). Batches are built before timing (fbank read from
disk is not timed), --warmup batches are decoded first, and decoding is
zipformer_rwkv.decoding.inference.decode_dataset, so the times are what decode.py logs. "batch 1" decodes
utterance by utterance; "batched" uses lhotse's DynamicBucketingSampler with --max-duration seconds
per batch. WER (kaldialign) is printed as a check that the model is the trained one. Peak RSS is the
process maximum so far.
"""
import argparse
import itertools
import resource
import sys
import time
from pathlib import Path
from typing import List

import torch

from zipformer_rwkv import recipe
from zipformer_rwkv.decoding.inference import decode_dataset, load_model
from zipformer_rwkv.decoding.search import DecodingOptions
from zipformer_rwkv.errors import RecipeError
from zipformer_rwkv.training.selection import resolve_decode_checkpoints
from zipformer_rwkv.utils import AttributeDict


def load_system(exp_dir: Path, epoch: int, avg: int, use_averaged_model: bool, common: List[str], device):
    """(params, model, tokenizers, args) as decode.py builds them (`inference.load_model`); `args` holds
    the data options (`AsrDataModule.add_arguments`) of `common`."""
    from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule

    parser = argparse.ArgumentParser()
    recipe.add_model_arguments(parser)
    AsrDataModule.add_arguments(parser)
    args = parser.parse_args(common)
    params = AttributeDict(vars(args), exp_dir=exp_dir, epoch=epoch, iter=0, avg=avg,
                           use_averaged_model=use_averaged_model)
    plan = resolve_decode_checkpoints(exp_dir, epoch, 0, avg, use_averaged_model)
    params, model, tokenizers = load_model(plan, params, device=device)
    return params, model, tokenizers, args


def make_batches(cuts, batch_size_one: bool, max_duration: float) -> list:
    """Materialised K2SpeechRecognitionDataset batches (no augmentation, no shuffling)."""
    from lhotse.dataset import DynamicBucketingSampler, K2SpeechRecognitionDataset, SimpleCutSampler

    dataset = K2SpeechRecognitionDataset(return_cuts=True)
    if batch_size_one:
        sampler = SimpleCutSampler(cuts, max_cuts=1, shuffle=False)
    else:
        sampler = DynamicBucketingSampler(cuts, max_duration=max_duration, shuffle=False,
                                          num_buckets=min(10, max(2, len(cuts) // 4)))
    return [dataset[b] for b in sampler]


def wer(results) -> float:
    import kaldialign

    errs = sum(kaldialign.edit_distance(r, h)["total"] for _, r, h, _ in results)
    words = sum(len(r) for _, r, _, _ in results)
    return 100.0 * errs / max(words, 1)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def bench(model, tokenizers, batches, options: DecodingOptions, device, warmup: int) -> dict:
    decode_dataset(model, batches[:warmup], tokenizers, device, options)  # warm-up
    t0 = time.time()
    results, stats = decode_dataset(model, batches, tokenizers, device, options)
    wall = time.time() - t0
    return dict(utts=stats["utterances"], audio=stats["audio_seconds"], secs=stats["decode_seconds"],
                wall=wall, rtfx=stats["audio_seconds"] / max(stats["decode_seconds"], 1e-9),
                wer=wer(results), truncated=stats["truncated"], skipped=stats["skipped"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llm-exp-dir", type=Path, default=None)
    p.add_argument("--llm-epoch", type=int, default=0)
    p.add_argument("--llm-avg", type=int, default=1)
    p.add_argument("--ctc-exp-dir", type=Path, default=None)
    p.add_argument("--ctc-epoch", type=int, default=0)
    p.add_argument("--ctc-avg", type=int, default=1)
    p.add_argument("--use-averaged-model", default="auto", choices=("auto", "true", "false"),
                   help="auto: true for a system whose --*-epoch > --*-avg (as run.sh decodes it)")
    p.add_argument("--conf", default=str(Path(__file__).resolve().parent.parent / "egs/tts_en/conf.yaml"))
    p.add_argument("--manifest-dir", default="data/fbank")
    p.add_argument("--bpe-model", default="data/lang_bpe_500/bpe.model")
    p.add_argument("--test-set", default="test", help="a test set name of --conf")
    p.add_argument("--max-duration", type=float, default=600.0, help="batched: seconds of audio per batch")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--max-utts", type=int, default=0, help="use only the first N cuts (0: all)")
    p.add_argument("--num-threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--warmup", type=int, default=2, help="batches decoded (untimed) before each timing")
    p.add_argument("--methods", default="greedy_search,beam_search", help="speech LLM search methods")
    p.add_argument("--ctc-weight", type=float, default=0.0,
                   help="if > 0, also time each speech LLM method as joint CTC / RWKV-7 search (decode.py)")
    args = p.parse_args()
    if args.llm_exp_dir is None and args.ctc_exp_dir is None:
        sys.exit("bench_decode.py: error: give --llm-exp-dir and/or --ctc-exp-dir")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    common = ["--conf", args.conf, "--manifest-dir", args.manifest_dir, "--bpe-model", args.bpe_model,
              "--num-workers", "0"]
    systems = []
    for name, d, e, a in (("ctc", args.ctc_exp_dir, args.ctc_epoch, args.ctc_avg),
                          ("llm", args.llm_exp_dir, args.llm_epoch, args.llm_avg)):
        if d is not None:
            if e < 1:
                sys.exit(f"bench_decode.py: error: --{name}-epoch is required with --{name}-exp-dir")
            try:
                use_avg = e > a if args.use_averaged_model == "auto" else args.use_averaged_model == "true"
                systems.append((name, d) + load_system(d, e, a, use_avg, common, device))
            except (RecipeError, ValueError, FileNotFoundError) as err:
                sys.exit(f"bench_decode.py: error: {err}")

    from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule

    data = AsrDataModule(systems[0][5])
    sets = data.test_cuts()
    if args.test_set not in sets:
        sys.exit(f"bench_decode.py: error: no test set {args.test_set!r} in {args.conf} (has {sorted(sets)})")
    cuts = sets[args.test_set].to_eager()
    if args.max_utts:
        cuts = cuts.subset(first=min(args.max_utts, len(cuts)))
    batches = {1: make_batches(cuts, True, args.max_duration), 0: make_batches(cuts, False, args.max_duration)}

    rows = []
    for name, d, params, model, tokenizers, _ in systems:
        methods = ["greedy_search"] if params.model_type == "ctc" else args.methods.split(",")
        nparams = sum(p.numel() for p in model.parameters())
        weights = [0.0] + ([args.ctc_weight] if params.model_type == "llm" and args.ctc_weight > 0 else [])
        for method, weight in itertools.product(methods, weights):
            for bs, bl in batches.items():
                options = DecodingOptions(decoding_method=method, beam_size=args.beam_size, ctc_weight=weight,
                                          max_new_tokens=args.max_new_tokens)
                r = bench(model, tokenizers, bl, options, device, args.warmup)
                label = method if method != "beam_search" else f"beam_search (beam {args.beam_size})"
                label += f" + ctc {weight:g}" if weight else ""
                rows.append((f"{name} ({nparams / 1e6:.2f} M)", "ctc greedy" if name == "ctc" else label,
                             "1" if bs == 1 else f"{len(bl)} batches ({args.max_duration:g} s)", r))
                print(f"... {rows[-1][0]} {rows[-1][1]} {rows[-1][2]}: RTFx {r['rtfx']:.1f}", flush=True)

    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"\nDecoding {args.test_set}: {len(cuts)} utterances, {sum(c.duration for c in cuts):.1f} s of audio; "
          f"device {device} (threads {threads}); peak RSS {peak_rss_gib():.2f} GiB")
    head = ["system", "search", "batch", "audio s", "decode s", "RTFx", "WER %", "hit max-new-tokens"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for system, method, bs, r in rows:
        print(f"| {system} | {method} | {bs} | {r['audio']:.1f} | {r['secs']:.2f} | {r['rtfx']:.1f} | "
              f"{r['wer']:.2f} | {r['truncated']} |")


if __name__ == "__main__":
    main()
