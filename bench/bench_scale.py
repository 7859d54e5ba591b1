#!/usr/bin/env python3
"""Training throughput of the speech LLM at the scale users run it, on random fbank.

Model (train.py's own builders, random weights): Zipformer2 `--encoder-config large` (icefall's large,
~148 M) -> adapter -> RWKV-7 of the 0.4B shape (24 layers x 1024, head size 64, World vocabulary 65536),
bf16 autocast (`--use-bf16 true`, as train.py), `--freeze-encoder true` and `false`. Batches of
--max-durations seconds (default 600 and 1000) made of --utt-seconds utterances of random 80-dim fbank
(100 frames/s) with random English transcripts (~2.7 words/s, LibriSpeech's rate); all of one length, so
no padding (bucketed real batches pad a little). Each point: --warmup
untimed optimizer steps, then --batches timed ones (synchronized wall time), with the encoder's
schedules at train.py's batch count 100000 (no random layer skipping, final dropout and balancer rates:
the steady state of every epoch but the first).

Reports audio seconds per second, peak memory (CUDA: the allocator's peak for that point; CPU: the
process's max RSS so far) and the hours one epoch of LibriSpeech 960 h (no speed perturbation) would
take at that throughput on this one device. A point that runs out of CUDA memory says "OOM".

--train-py DIR: also runs the real `zipformer_rwkv/train.py` (`train.run`, one epoch, --world-size 1,
tiny model, tiny synthetic corpus written under DIR by tests/speech_llm_data.py) in a process started by
`mp.spawn`, with a torch.distributed group (NCCL on CUDA, gloo on CPU) set up the way torchrun's
environment makes train.py do it (train.py itself only spawns and joins a group for --world-size > 1).

--dry-run: tiny encoder and a 2 x 64 RWKV-7, 20 s and 30 s batches, 1 + 1 steps: a CPU check that the
script works, not a measurement.

Usage:
  python bench/bench_scale.py --out scale.md                      # GPU: the real-scale table
  python bench/bench_scale.py --train-py /tmp/trainpy --out scale.md
  python bench/bench_scale.py --dry-run --train-py /tmp/trainpy   # CPU, tiny shapes
"""
import argparse
import dataclasses
import gc
import importlib.util
import os
import random
import resource
import socket
import time
from pathlib import Path
from typing import List

import torch

from train_step import build_for_training, training_step

ROOT = Path(__file__).resolve().parent.parent

LIBRISPEECH_S = 960 * 3600.0
STEADY_BATCH_COUNT = 100000.0  # Zipformer2 schedules (layer skipping, dropout, balancers) past their warm-up
WORDS = ("the and of to a in he that was it his i with had as for you her but not she is at on by all "
         "which be they said from this so one have there or when what were them could would into "
         "little upon out now an man their time some very more then great old good before about").split()
TINY_ENCODER = ("--num-encoder-layers 1,1 --downsampling-factor 1,2 --feedforward-dim 64,64 --num-heads 2,2 "
                "--encoder-dim 32,32 --encoder-unmasked-dim 16,16 --cnn-module-kernel 15,15 --query-head-dim 8 "
                "--value-head-dim 8 --pos-head-dim 4 --pos-dim 16 --encoder-embed-channels 16").split()


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes, 1 + 1 steps (CPU check)")
    p.add_argument("--max-durations", type=float, nargs="+", default=None,
                   help="seconds of audio per batch (default 600 1000; dry run 20 30)")
    p.add_argument("--freeze-encoder", choices=["true", "false", "both"], default="both")
    p.add_argument("--utt-seconds", type=float, default=None, help="utterance length (default 15; dry run 5)")
    p.add_argument("--rwkv-layers", type=int, default=24)
    p.add_argument("--rwkv-width", type=int, default=1024)
    p.add_argument("--batches", type=int, default=None, help="timed steps per point (default 5; dry run 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; dry run 1)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--train-py", type=Path, default=None, metavar="DIR",
                   help="also run train.py once (mp.spawn, one process) on a tiny corpus written under DIR")
    p.add_argument("--out", type=Path, default=None, help="also append the tables to this markdown file")
    return p


def scale_params(freeze_encoder: bool, max_duration: float, dry_run: bool, layers: int, width: int):
    """train.py's params for the speech LLM at scale (or tiny for a dry run), RWKV-7 from a config."""
    from zipformer_rwkv import train
    from zipformer_rwkv.rwkv7 import RWKV7Config

    argv = ["--model-type", "llm", "--tokenizer", "world", "--use-bf16", "true",
            "--freeze-encoder", str(freeze_encoder).lower(), "--max-duration", str(max_duration)]
    argv += TINY_ENCODER if dry_run else ["--encoder-config", "large"]
    params = train.get_params()
    params.update(vars(train.get_parser().parse_args(argv)))
    train.set_autocast_params(params)
    layers, width = (2, 64) if dry_run else (layers, width)
    params.rwkv_config = dataclasses.asdict(RWKV7Config.with_default_dims(n_layer=layers, n_embd=width,
                                                                          vocab_size=65536, head_size=64))
    return params


def random_batch(max_duration: float, utt_seconds: float, rng: random.Random) -> dict:
    """A K2SpeechRecognitionDataset-like batch: floor(max_duration / utt_seconds) utterances (at least 1)
    of (N, T, 80) float32 random fbank, T = 100 * utt_seconds frames, and random transcripts."""
    n, frames = max(1, int(max_duration // utt_seconds)), int(round(utt_seconds * 100))
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    texts = [" ".join(rng.choice(WORDS) for _ in range(max(1, round(2.7 * utt_seconds)))) for _ in range(n)]
    sup = {"sequence_idx": torch.arange(n), "start_frame": torch.zeros(n, dtype=torch.long),
           "num_frames": torch.full((n,), frames, dtype=torch.long), "text": texts}
    return {"inputs": torch.randn(n, frames, 80, generator=g), "supervisions": sup}


def measure_point(params, built, device, max_duration, utt_seconds, warmup, batches) -> dict:
    """Throughput (audio s/s) and peak memory of `warmup` + `batches` steps at one batch size."""
    from zipformer_rwkv.zipformer import set_batch_count

    model, tokenizers, optimizer, scaler = built
    set_batch_count(model, STEADY_BATCH_COUNT)
    rng = random.Random(0)
    batch = random_batch(max_duration, utt_seconds, rng)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    audio, t0 = 0.0, time.time()
    for step in range(warmup + batches):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            audio, t0 = 0.0, time.time()
        audio += training_step(params, model, optimizer, scaler, batch, tokenizers, device, step + 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.time() - t0
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    return dict(rate=audio / wall, peak_gib=peak, utts=batch["inputs"].size(0))


def scale_table(args, device: torch.device) -> List[str]:
    """Markdown rows of the throughput table, one per (freeze-encoder, max-duration) point. The model
    is built once, unfrozen; the frozen-encoder points follow with the encoder frozen and new optimizers."""
    from zipformer_rwkv import recipe

    durations = args.max_durations or ([20.0, 30.0] if args.dry_run else [600.0, 1000.0])
    utt = args.utt_seconds or (5.0 if args.dry_run else 15.0)
    warmup = args.warmup if args.warmup is not None else (1 if args.dry_run else 2)
    batches = args.batches or (1 if args.dry_run else 5)
    freezes = {"true": [True], "false": [False], "both": [False, True]}[args.freeze_encoder]
    mem = "peak CUDA GiB" if device.type == "cuda" else "max RSS GiB (process)"
    rows = [f"Training throughput, random fbank, bf16 autocast, {utt:g} s utterances, {warmup} warm-up + "
            f"{batches} timed steps per point, device {device}"
            + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
            + (" -- DRY RUN (tiny shapes, not a measurement)" if args.dry_run else ""), "",
            f"| freeze encoder | max-duration s (utts) | params (trainable) | audio s/s | {mem} | h per 960 h epoch |",
            "|---|---|---|---|---|---|"]
    print("\n".join(rows), flush=True)
    params = scale_params(freezes[0], durations[0], args.dry_run, args.rwkv_layers, args.rwkv_width)
    built = build_for_training(params, device)  # one build (RWKV-7's orthogonal init is slow on CPU)
    model = built[0]
    for freeze in freezes:
        if freeze and not params.freeze_encoder:  # as recipe.get_model does for --freeze-encoder true
            params.freeze_encoder = True
            model.freeze("encoder")
            tokenizers, scaler = built[1], built[3]
            built = None  # free the first run's optimizer state before making the new optimizers
            gc.collect()
            built = (model, tokenizers, recipe.get_optimizer(params, model), scaler)
        n_all = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        for d in durations:
            params.max_duration = d
            cell = f"| {freeze} | {d:g} ({max(1, int(d // utt))}) | {n_all / 1e6:.1f} M ({n_train / 1e6:.1f} M) |"
            try:
                r = measure_point(params, built, device, d, utt, warmup, batches)
                cell += f" {r['rate']:.2f} | {r['peak_gib']:.2f} | {LIBRISPEECH_S / r['rate'] / 3600:.2f} |"
            except torch.cuda.OutOfMemoryError:
                model.zero_grad(set_to_none=True)
                cell += " OOM | OOM | - |"
            rows.append(cell)
            print(cell, flush=True)
    del built, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_rank(rank: int, argv: List[str], port: int, result: str) -> None:
    """mp.spawn target: torchrun's environment for a 1-process group, then train.py's run()."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="1", LOCAL_RANK=str(rank), MASTER_ADDR="localhost",
                      MASTER_PORT=str(port))
    import torch.distributed as dist

    from zipformer_rwkv import train
    from zipformer_rwkv.training.dist import cleanup_dist

    train.run(rank, 1, train.get_parser().parse_args(argv))
    Path(result).write_text(dist.get_backend() if dist.is_initialized() else "none")
    cleanup_dist()


def run_train_py(work: Path, device: torch.device) -> List[str]:
    """One epoch of train.py (tiny speech LLM, synthetic corpus under `work`) via mp.spawn; table rows.

    Raises:
      RuntimeError: train.py did not write epoch-1.pt.
    """
    import torch.multiprocessing as mp

    # the synthetic corpus of the tests (tests/speech_llm_data.py), loaded by path: tests/ is no package
    spec = importlib.util.spec_from_file_location("speech_llm_data", ROOT / "tests" / "speech_llm_data.py")
    speech_llm_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speech_llm_data)
    make_bpe, make_corpus = speech_llm_data.make_bpe, speech_llm_data.make_corpus

    work.mkdir(parents=True, exist_ok=True)
    bpe = make_bpe(work / "lang")
    conf = make_corpus(work / "corpus")
    exp = work / "exp"
    argv = ["--model-type", "llm", "--exp-dir", str(exp), "--world-size", "1", "--num-epochs", "1",
            "--max-duration", "6", "--conf", str(conf), "--manifest-dir", str(conf.parent / "fbank"),
            "--bpe-model", str(bpe), "--num-workers", "0", "--enable-musan", "false", "--num-buckets", "2",
            "--tensorboard", "false", "--min-utt-duration", "0.5", "--rwkv-n-layer", "2", "--rwkv-n-embd", "64",
            "--use-bf16", str(device.type == "cuda").lower(), "--num-threads", "1"] + TINY_ENCODER
    t0 = time.time()
    mp.spawn(_train_rank, args=(argv, _free_port(), str(work / "backend.txt")), nprocs=1, join=True)
    wall = time.time() - t0
    if not (exp / "epoch-1.pt").is_file():
        raise RuntimeError(f"train.py wrote no {exp / 'epoch-1.pt'}")
    backend = (work / "backend.txt").read_text()
    rows = ["", "train.py via mp.spawn (1 process), one epoch, tiny speech LLM on the synthetic corpus:", "",
            "| device | process group | epoch-1.pt | wall s |", "|---|---|---|---|",
            f"| {device} | {backend} | written | {wall:.1f} |"]
    print("\n".join(rows), flush=True)
    return rows


def main() -> None:
    args = get_parser().parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = scale_table(args, device)
    if args.train_py is not None:
        rows += run_train_py(args.train_py, device)
    if args.out is not None:
        with open(args.out, "a", encoding="utf8") as f:
            f.write("\n".join(rows) + "\n\n")


if __name__ == "__main__":
    main()
