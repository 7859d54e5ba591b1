#!/usr/bin/env python3
"""Training throughput (audio seconds, or LM tokens, per wall second) and peak memory of each
run.sh training stage. Prints a table.

Usage (from the folder run.sh ran in):
  python bench/bench_train.py exp/ctc exp/lm exp/llm                # 3 warm-up + 10 timed batches each
  python bench/bench_train.py exp/llm --batches 20 --warmup 5 --num-threads 2

For each train.py --exp-dir given, the options of its newest epoch-N.pt (or checkpoint-N.pt) are
reused: same model structure, PEFT/freezing, optimizer, --max-duration/--max-tokens, data,
augmentation and autocast (--use-fp16 / --use-bf16, the "autocast" column). The model starts from random weights (the speed does not depend on them). Each
stage runs in its own process, so "peak RSS" is that stage's own maximum resident memory
(model, optimizer, data loader in the main process; --num-workers 0 is forced so loading is
included in the timed wall time, as on a 2-core machine). "in run" is the throughput train.py
logged in the real run (its last progress line), for comparison.
"""
import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

RATE_RE = re.compile(r"([\d.]+) (audio s|tokens)/s, ETA")


def newest_checkpoint(exp_dir: Path) -> Path:
    """The checkpoint a re-run of train.py would continue from (`resume.latest_checkpoint`)."""
    from zipformer_rwkv.resume import latest_checkpoint

    found = latest_checkpoint(exp_dir)
    if found is None:
        raise FileNotFoundError(f"{exp_dir}: no epoch-N.pt or checkpoint-N.pt (not a train.py --exp-dir?)")
    return found


def logged_rate(exp_dir: Path) -> Optional[str]:
    """The throughput of the last progress line of the newest log-train-* file."""
    logs = sorted((exp_dir / "log").glob("log-train-*"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return None
    found = RATE_RE.findall(logs[-1].read_text(encoding="utf8", errors="replace"))
    return f"{float(found[-1][0]):.1f}" if found else None


def build_for_training(params, device):
    """train.py's model (random weights: `recipe.get_model(params, load_pretrained=False)`, so an
    RWKV-7 comes from params.rwkv_config), moved to `device` in train mode, its optimizers and grad
    scaler. Returns (model, tokenizers, optimizer, scaler)."""
    from zipformer_rwkv import recipe
    from zipformer_rwkv.utils import create_grad_scaler

    model, tokenizers = recipe.get_model(params, load_pretrained=False)
    model.to(device).train()
    optimizer = recipe.get_optimizer(params, model)
    scaler = create_grad_scaler(device, enabled=params.use_fp16, init_scale=1.0)
    return model, tokenizers, optimizer, scaler


def training_step(params, model, optimizer, scaler, batch: dict, tokenizers, device, step: int) -> float:
    """One train.py optimizer step on `batch` (autocast per params.use_autocast/params.dtype, grad
    scaler, scheduler at batch `step`); returns the batch's audio seconds (lm: tokens)."""
    from zipformer_rwkv import recipe, train
    from zipformer_rwkv.utils import torch_autocast

    with torch_autocast(device, enabled=params.use_autocast, dtype=params.dtype):
        loss, _ = recipe.compute_loss(params, model, batch, tokenizers, device)
    scaler.scale(loss).backward()
    optimizer.scheduler.step_batch(step)
    optimizer.step(scaler)
    scaler.update()
    optimizer.zero_grad()
    return train.batch_audio_seconds(params, batch)


def measure(exp_dir: Path, batches: int, warmup: int) -> dict:
    """Run warmup + batches training steps with exp_dir's options; returns the numbers."""
    import torch

    from zipformer_rwkv import train
    from zipformer_rwkv.checkpoint import read_checkpoint

    ckpt = newest_checkpoint(exp_dir)
    saved = read_checkpoint(ckpt)
    if "model_type" not in saved:
        raise ValueError(f"{ckpt} has no training options (model_type); not written by train.py?")
    args = train.get_parser().parse_args([])
    for k, v in saved.items():
        if hasattr(args, k) and not isinstance(v, dict):
            setattr(args, k, Path(v) if isinstance(getattr(args, k), Path) else v)
    args.num_workers, args.world_size = 0, 1
    params = train.get_params()
    params.update(vars(args))
    params.rwkv_config = saved.get("rwkv_config")
    train.set_autocast_params(params)  # --use-fp16 / --use-bf16 as in the run
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    model, tokenizers, optimizer, scaler = build_for_training(params, device)
    train_dl, _ = train.get_dataloaders(params, args, tokenizers, 1, 0)
    train_dl.sampler.set_epoch(0)
    amount = wall = 0.0
    done = 0
    it = iter(train_dl)
    t0 = time.time()
    while done < warmup + batches:
        try:
            batch = next(it)
        except StopIteration:
            if done == 0:
                raise ValueError(f"{exp_dir}: the training data gave no batch")
            train_dl.sampler.set_epoch(done)
            it = iter(train_dl)
            continue
        if done == warmup:
            t0, amount = time.time(), 0.0
        amount += training_step(params, model, optimizer, scaler, batch, tokenizers, device, done + 1)
        done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.time() - t0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    autocast = {torch.float16: "fp16", torch.bfloat16: "bf16"}[params.dtype] if params.use_autocast else "fp32"
    return dict(model_type=params.model_type, autocast=autocast, checkpoint=str(ckpt), batches=batches, amount=amount, wall=wall,
                rate=amount / max(wall, 1e-9), unit="tokens" if params.model_type == "lm" else "audio s",
                peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                peak_cuda_gib=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
                params=sum(p.numel() for p in model.parameters()), trainable=trainable,
                threads=torch.get_num_threads(), device=str(device))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dirs", type=Path, nargs="+", help="train.py --exp-dir folders (exp/ctc exp/lm exp/llm)")
    p.add_argument("--batches", type=int, default=10, help="timed batches per stage")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--num-threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one exp dir
    args = p.parse_args()
    if args.one:
        import torch

        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        try:
            print("RESULT " + json.dumps(measure(args.exp_dirs[0], args.batches, args.warmup)))
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"bench_train.py: error: {e}")
        return
    rows = []
    for d in args.exp_dirs:
        cmd = [sys.executable, __file__, str(d), "--one", "--batches", str(args.batches),
               "--warmup", str(args.warmup), "--num-threads", str(args.num_threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        res = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not res:
            sys.exit(f"bench_train.py: {d} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(res[0])
        rows.append((d, r, logged_rate(d)))
        print(f"... {d}: {r['rate']:.1f} {r['unit']}/s, peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
    r0 = rows[0][1]
    print(f"\nTraining throughput: {args.batches} timed batches after {args.warmup} warm-up; "
          f"device {r0['device']} (threads {r0['threads']})")
    head = ["exp dir", "type", "autocast", "params (trainable)", "throughput", "in run", "peak RSS GiB", "peak CUDA GiB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for d, r, logged in rows:
        cuda = f"{r['peak_cuda_gib']:.2f}" if r["peak_cuda_gib"] is not None else "-"
        print(f"| {d} | {r['model_type']} | {r['autocast']} | {r['params'] / 1e6:.2f} M ({r['trainable'] / 1e6:.2f} M) | "
              f"{r['rate']:.1f} {r['unit']}/s | {logged or '-'} | {r['peak_rss_gib']:.2f} | {cuda} |")


if __name__ == "__main__":
    main()
