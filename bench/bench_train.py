#!/usr/bin/env python3
"""Training throughput (audio seconds, or LM tokens, per wall second) and peak memory of each
run.sh training stage. Prints a table.

Usage (from the folder run.sh ran in):
  python bench/bench_train.py exp/ctc exp/lm exp/llm                # 3 warm-up + 10 timed batches each
  python bench/bench_train.py exp/llm --batches 20 --warmup 5 --num-threads 2
  # both sides in one run: this tree against git revision REV, same model, batches and step
  python bench/bench_train.py exp/ctc --num-threads 2 --baseline REV --repeats 3
  # both sides in one run: the run's own options against the same with some changed (train.py names)
  python bench/bench_train.py exp/ctc --variant otf:on_the_fly_feats=true --variant aug:conf=my_conf.yaml

For each train.py --exp-dir given, the options of its newest epoch-N.pt (or checkpoint-N.pt) are
reused: same model structure, PEFT/freezing, optimizer, --max-duration/--max-tokens, data,
augmentation and autocast (--use-fp16 / --use-bf16, the "autocast" column). The model starts from
random weights (the speed does not depend on them). Each
stage runs in its own process, so "peak RSS" is that stage's own maximum resident memory
(model, optimizer, data loader in the main process; --num-workers 0 is forced so loading is
included in the timed wall time, as on a 2-core machine). "in run" is the throughput train.py
logged in the real run (its last progress line), for comparison. "per CPU s" is the amount per
second of the process's CPU time (all its threads): on a machine shared with other work it moves
less than the wall-time throughput (with --num-threads 1 it is free of OpenMP spin-waiting too).

The Zipformer's schedules (Balancer/Whiten probabilities, layer skipping, dropout) are set as
train.py sets them at batch `--at-batch` (default: the checkpoint's own last batch, i.e. the
steady state of the run; icefall's schedules start with each Balancer applied to half the
steps instead of an eighth, with more dropout and layer skipping, so early steps cost differently).

`--baseline REV` runs each stage a second time with the code of git revision REV (exported
with `git archive` to a temporary folder and put first on the child's PYTHONPATH), alternating
the two sides `--repeats` times; the table gives each side's median and the speed-up.
`--variant NAME:KEY=VALUE[,KEY=VALUE...]` adds a side that runs this tree with the checkpoint's
options KEY (train.py's option names, with underscores) set to VALUE, e.g. `conf=FILE` for a corpus
conf with `augment: {enabled: true}` (audio augmentation and on-the-fly fbank); the speed-up column
is then relative to the first side.
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from train_step import build_for_training, training_step

ROOT = Path(__file__).resolve().parent.parent  # the repository (`git archive` for --baseline)

RATE_RE = re.compile(r"([\d.]+) (audio s|tokens)/s, ETA")


def newest_checkpoint(exp_dir: Path) -> Path:
    """The checkpoint a re-run of train.py would continue from (`resume.latest_checkpoint`)."""
    from zipformer_rwkv.training.resume import latest_checkpoint

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


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}
CONV_OPS = {"aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
            "aten::_slow_conv2d_backward", "aten::thnn_conv2d", "aten::_convolution_depthwise2d"}


def profile_split(prof) -> dict:
    """Seconds of the profiled steps by kind: matmul and convolution ops (their own time),
    Balancer/Whiten backward and the optimizer step (time inside them), everything else."""
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    split = dict(matmul=sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS),
                 conv=sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS),
                 balancer_whiten=sum(e.cpu_time_total for e in events
                                     if e.key in ("_BalancerFnBackward", "_WhitenFnBackward")),
                 optimizer=sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step#")))
    split["other"] = total - sum(split.values())
    return {k: v / 1e6 for k, v in split.items()}


def parse_sets(items) -> dict:
    """["KEY=VALUE", ...] -> {KEY: VALUE} (strings). Raises ValueError for an item without "="."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def apply_sets(args, sets: dict) -> None:
    """Set train.py options in `args` from strings, cast to the type of the option's current value
    (Path, bool as true/false, int, float, str). Raises ValueError for an unknown option."""
    from zipformer_rwkv.utils import str2bool

    for key, value in sets.items():
        if not hasattr(args, key):
            raise ValueError(f"--variant: train.py has no option {key!r}")
        old = getattr(args, key)
        cast = (Path if isinstance(old, Path) else str2bool if isinstance(old, bool) else
                type(old) if isinstance(old, (int, float)) else str)
        setattr(args, key, cast(value))


def measure(exp_dir: Path, batches: int, warmup: int, at_batch: int = -1, profile: bool = False,
            sets: Optional[dict] = None) -> dict:
    """Run warmup + batches training steps with exp_dir's options (`sets`: some changed, see
    `apply_sets`), the Zipformer's schedules set as at train.py batch `at_batch` (-1: the
    checkpoint's batch_idx_train); returns the numbers."""
    import torch

    from zipformer_rwkv import train
    from zipformer_rwkv.training.checkpoint import read_checkpoint

    ckpt = newest_checkpoint(exp_dir)
    saved = read_checkpoint(ckpt)
    if "model_type" not in saved:
        raise ValueError(f"{ckpt} has no training options (model_type); not written by train.py?")
    args = train.get_parser().parse_args([])
    for k, v in saved.items():
        if hasattr(args, k) and not isinstance(v, dict):
            setattr(args, k, Path(v) if isinstance(getattr(args, k), Path) else v)
    args.num_workers, args.world_size = 0, 1
    apply_sets(args, sets or {})
    params = train.get_params()
    params.update(vars(args))
    params.rwkv_config = saved.get("rwkv_config")
    train.set_autocast_params(params)  # --use-fp16 / --use-bf16 as in the run
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    model, tokenizers, optimizer, scaler = build_for_training(params, device)
    at_batch = int(saved.get("batch_idx_train", 0)) if at_batch < 0 else at_batch
    train.set_encoder_schedules(params, model, at_batch, world_size=1)  # as train.py does before each batch
    train_dl, _ = train.get_dataloaders(params, args, tokenizers, 1, 0)
    train_dl.sampler.set_epoch(0)
    amount = wall = 0.0
    done = 0
    it = iter(train_dl)
    prof = None
    t0, cpu0 = time.time(), time.process_time()
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
            t0, cpu0, amount = time.time(), time.process_time(), 0.0
            if profile:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                prof.__enter__()
        amount += training_step(params, model, optimizer, scaler, batch, tokenizers, device, done + 1)
        done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.time() - t0, time.process_time() - cpu0
    split = None
    if prof is not None:
        prof.__exit__(None, None, None)
        split = profile_split(prof)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    autocast = {torch.float16: "fp16", torch.bfloat16: "bf16"}[params.dtype] if params.use_autocast else "fp32"
    return dict(model_type=params.model_type, autocast=autocast, checkpoint=str(ckpt), batches=batches,
                amount=amount, wall=wall, cpu=cpu,
                rate=amount / max(wall, 1e-9), cpu_rate=amount / max(cpu, 1e-9),
                unit="tokens" if params.model_type == "lm" else "audio s",
                peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                peak_cuda_gib=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
                params=sum(p.numel() for p in model.parameters()), trainable=trainable,
                threads=torch.get_num_threads(), device=str(device), at_batch=at_batch, split=split)


def run_child(exp_dir: Path, args, code: Optional[Path] = None, sets: Optional[dict] = None) -> dict:
    """measure() in a fresh process (its own peak RSS), importing zipformer_rwkv from `code`
    (None: this tree), with the options `sets` changed. Exits with the child's error when it fails."""
    cmd = [sys.executable, __file__, str(exp_dir), "--one", "--batches", str(args.batches),
           "--warmup", str(args.warmup), "--num-threads", str(args.num_threads), "--at-batch", str(args.at_batch)]
    cmd += ["--profile"] if args.profile else []
    cmd += [f"--set={k}={v}" for k, v in (sets or {}).items()]
    env = None
    if code is not None:  # the exported revision's zipformer_rwkv comes first on the child's path
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code)] + [os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    res = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not res:
        side = f" (code of {args.baseline})" if code is not None else ""
        sys.exit(f"bench_train.py: {exp_dir}{side} failed:\n{proc.stderr[-3000:]}")
    return json.loads(res[0])


def export_revision(rev: str, dest: Path) -> Path:
    """`git archive REV` of this repository unpacked into dest; returns dest.
    Raises SystemExit with git's message when REV is unknown."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], capture_output=True)
    if archive.returncode != 0:
        sys.exit(f"bench_train.py: --baseline {rev}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exp_dirs", type=Path, nargs="+", help="train.py --exp-dir folders (exp/ctc exp/lm exp/llm)")
    p.add_argument("--batches", type=int, default=10, help="timed batches per stage")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--num-threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--at-batch", type=int, default=-1,
                   help="set the Zipformer's schedules as train.py does at this batch (-1: the checkpoint's last)")
    p.add_argument("--baseline", default="", help="git revision to compare against, in the same run")
    p.add_argument("--repeats", type=int, default=1, help="runs per side (alternating); the median is shown")
    p.add_argument("--profile", action="store_true",
                   help="also split the timed steps' time by kind (matmul, conv, ...; under the profiler, so the "
                        "throughput of such a run is a little lower)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                   help="another side: this tree with these train.py options changed (repeatable)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one exp dir
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)  # child: changed options
    args = p.parse_args()
    if args.one:
        import torch

        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        try:
            result = measure(args.exp_dirs[0], args.batches, args.warmup, args.at_batch, args.profile,
                             parse_sets(args.set))
            print("RESULT " + json.dumps(result))
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"bench_train.py: error: {e}")
        return
    variants = []
    for v in args.variant:
        name, sep, sets = v.partition(":")
        try:
            variants.append((name, None, parse_sets(sets.split(","))))
        except ValueError as e:
            sys.exit(f"bench_train.py: --variant {v}: {e}")
        if not sep or not name:
            sys.exit(f"bench_train.py: --variant {v}: expected NAME:KEY=VALUE[,KEY=VALUE]")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        sides = [("this tree", None, None)] + variants
        if args.baseline:
            sides.insert(0, (args.baseline, export_revision(args.baseline, Path(tmp)), None))
        rows = []
        for d in args.exp_dirs:
            runs = {name: [] for name, _, _ in sides}
            for _ in range(args.repeats):
                for name, code, sets in sides:
                    r = run_child(d, args, code, sets)
                    runs[name].append(r)
                    print(f"... {d} [{name}]: {r['rate']:.1f} {r['unit']}/s, {r['cpu_rate']:.1f} per CPU s, "
                          f"peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
            base_rate = statistics.median(r["rate"] for r in runs[sides[0][0]]) if len(sides) > 1 else None
            for name, _, _ in sides:
                rates = [r["rate"] for r in runs[name]]
                cpu_rate = statistics.median(r["cpu_rate"] for r in runs[name])
                rows.append((d, name, runs[name][-1], statistics.median(rates), rates, base_rate, logged_rate(d),
                             cpu_rate))
    r0 = rows[0][2]
    print(f"\nTraining throughput: {args.batches} timed batches after {args.warmup} warm-up, schedules at batch "
          f"{r0['at_batch']}; device {r0['device']} (threads {r0['threads']}); median of {args.repeats} run(s)")
    head = ["exp dir", "code", "type", "autocast", "params (trainable)", "throughput", "runs", "speed-up", "in run",
            "per CPU s", "peak RSS GiB", "peak CUDA GiB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for d, name, r, rate, rates, base_rate, logged, cpu_rate in rows:
        cuda = f"{r['peak_cuda_gib']:.2f}" if r["peak_cuda_gib"] is not None else "-"
        speedup = f"{rate / base_rate:.2f}x" if base_rate else "-"
        print(f"| {d} | {name} | {r['model_type']} | {r['autocast']} | {r['params'] / 1e6:.2f} M "
              f"({r['trainable'] / 1e6:.2f} M) | {rate:.1f} {r['unit']}/s | {', '.join(f'{x:.1f}' for x in rates)} | "
              f"{speedup} | {logged or '-'} | {cpu_rate:.1f} | {r['peak_rss_gib']:.2f} | {cuda} |")
    if args.profile:
        print_split(rows)


def print_split(rows) -> None:
    """Where each stage's step time goes (last run of each side), and the throughput bound if all
    but the matmuls and convolutions took no time."""
    kinds = ["matmul", "conv", "balancer_whiten", "optimizer", "other"]
    print("\nStep time by kind (seconds over the timed batches, % of the total; profiler self time):")
    print("| exp dir | code | " + " | ".join(kinds) + " | bound: matmul + conv only |")
    print("|" + "---|" * (len(kinds) + 3))
    for d, name, r, *_ in rows:
        split = r["split"]
        total = sum(split.values())
        cells = " | ".join(f"{split[k]:.2f} ({100 * split[k] / total:.0f}%)" for k in kinds)
        bound = r["amount"] / max(split["matmul"] + split["conv"], 1e-9)
        print(f"| {d} | {name} | {cells} | {bound:.1f} {r['unit']}/s |")


if __name__ == "__main__":
    main()
