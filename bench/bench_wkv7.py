#!/usr/bin/env python3
"""WKV7 speed: forward and forward+backward time of naive / chunked / Triton / fla `chunk_rwkv7`.

Inputs as RWKV-7 produces them (w = -0.6065 * sigmoid(randn) log-decay, a = -kk, b = kk * sigmoid(randn)),
with an initial state, gradients for every input and the state. "fwd" runs without autograd (the
inference path: nothing saved for backward); "fwd+bwd" with it. Prints a markdown table of milliseconds.
CPU: the best of --repeats runs (--naive-repeats for the naive loop) after one warm-up, and the speed-up
over the naive loop. CUDA: CUDA-event time (synchronized before and after), the median of --repeats
runs after --warmup runs (Triton compiles in the first), fla's `chunk_rwkv7` last (its row says "not
installed" when flash-linear-attention does not import), then lines "fla vs triton...": fla's time over
ours, and the relative difference of fla's output and final state from ours.

Default shapes: (B, T, H, K) = (1, 1024, 4, 64) and (8, 512, 12, 64) (speech-LLM prefill: batch 8,
0.1B's 12 heads) fp32 on CPU; (8, 4096, 64, 64) and the long (1, 65536, 16, 64) bf16 on CUDA (naive is
skipped on CUDA: T Python steps; pass --naive-on-cuda to time it anyway). On CPU the Triton kernel is
timed only when Triton's interpreter is on (TRITON_INTERPRET=1: a dry run of the CUDA table, not a speed).

On a shared machine use --threads 1 and --timer cpu (CPU seconds of this process, so time slices
taken by other processes are not counted) and compare ratios measured in the same run.

Usage:
  python bench/bench_wkv7.py                          # CPU, plus CUDA when available
  python bench/bench_wkv7.py --device cpu --threads 1 --timer cpu --chunk-sizes 16 32
  python bench/bench_wkv7.py --device cpu --shape 1 1024 4 64 --fwd-only
  python bench/bench_wkv7.py --device cpu --lm-shapes --threads 1 --timer cpu --chunk-sizes 16 32 --tri-inv doubling
  python bench/bench_wkv7.py --device cuda --chunk-sizes        # Triton vs fla only, both CUDA shapes
  TRITON_INTERPRET=1 python bench/bench_wkv7.py --device cpu --shape 1 64 2 64 --chunk-sizes 16  # dry run
"""
import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Callable, List, Optional

import torch

from zipformer_rwkv.rwkv7.wkv7 import chunked, triton_available, wkv7

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_SHAPES = [(1, 1024, 4, 64), (8, 512, 12, 64)]
CUDA_SHAPES = [(8, 4096, 64, 64), (1, 65536, 16, 64)]
# LM training on CPU: ~300 sentences x 60 tokens with one 64-wide head, or 64 x 64 tokens with 4 heads
LM_SHAPES = [(300, 60, 1, 64), (64, 64, 4, 64)]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--shape", type=int, nargs=4, action="append", default=None, metavar=("B", "T", "H", "K"),
                   help="replace the default shapes of the chosen device (repeatable)")
    p.add_argument("--lm-shapes", action="store_true",
                   help=f"CPU shapes of small-LM training {LM_SHAPES} instead of the defaults")
    p.add_argument("--tri-inv", choices=["solve", "doubling"], default=None,
                   help="unit-lower-triangular inverse of the chunked path (default: the module's choice)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: fp32 on CPU, bf16 on CUDA")
    p.add_argument("--chunk-sizes", type=int, nargs="*", default=[16, 32, 64],
                   help="chunked PyTorch sizes (none: skip the chunked path)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per point (default 5 on CPU, best reported; 20 on CUDA, median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first on CUDA (CPU: 1)")
    p.add_argument("--naive-repeats", type=int, default=3, help="timed runs of the naive loop")
    p.add_argument("--timer", choices=["wall", "cpu"], default="wall",
                   help="wall: perf_counter; cpu: process CPU time (robust on a loaded machine)")
    p.add_argument("--fwd-only", action="store_true", help="skip the fwd+bwd column")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--naive-on-cuda", action="store_true")
    p.add_argument("--triton-num-warps", type=int, nargs="+", default=[4, 8],
                   help="CUDA: time the Triton kernels at each of these warps per program (the default is 4)")
    return p


def make_inputs(B: int, T: int, H: int, K: int, dtype: torch.dtype, device: str):
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    kk = torch.nn.functional.normalize(randn(B, T, H, K), dim=-1)
    xs = [randn(B, T, H, K) * 0.5, -0.6065306597 * torch.sigmoid(randn(B, T, H, K)), randn(B, T, H, K) * 0.5,
          randn(B, T, H, K) * 0.5, -kk, kk * torch.sigmoid(randn(B, T, H, K))]
    state = randn(B, H, K, K) * 0.3
    return [x.to(device=device, dtype=dtype) for x in xs], state.to(device)


FLA_ERROR = ""


def fla_fn() -> Optional[Callable]:
    """fla's chunk_rwkv7 adapted to our contract (its state is [key, value]: transpose; scale 1);
    None when flash-linear-attention does not import."""
    global FLA_ERROR
    try:
        from fla.ops.rwkv7 import chunk_rwkv7
    except Exception as e:  # absent, or present but broken: say which in the header line
        FLA_ERROR = f"{type(e).__name__}: {e}"
        return None

    def run(r, w, k, v, a, b, state):
        o, s = chunk_rwkv7(r=r, w=w, k=k, v=v, a=a, b=b, scale=1.0,
                           initial_state=state.transpose(-1, -2), output_final_state=True)
        return o, s.transpose(-1, -2)

    return run


@contextlib.contextmanager
def num_warps(n: Optional[int]):
    """Launch the Triton WKV7 kernels at `n` warps per program inside the block (None: unchanged)."""
    if n is None:
        yield
        return
    from zipformer_rwkv.rwkv7.wkv7 import triton_kernel

    old, triton_kernel.NUM_WARPS = triton_kernel.NUM_WARPS, n
    try:
        yield
    finally:
        triton_kernel.NUM_WARPS = old


def time_ms(fn: Callable, xs: List[torch.Tensor], state: torch.Tensor, backward: bool, repeats: int,
            timer: Callable[[], float] = time.perf_counter, warmup: int = 1) -> float:
    """Milliseconds of fn(*xs, state) (+ backward of out.sum() + state.sum() when `backward`), inputs
    (B, T, H, K) on one device. CPU: best of `repeats` by `timer` after one warm-up run. CUDA: median of
    `repeats` CUDA-event times after `warmup` runs, synchronized around each run."""
    cuda = xs[0].is_cuda
    times = []
    for i in range((warmup if cuda else 1) + repeats):
        ins = [x.detach().requires_grad_(backward) for x in xs]
        s0 = state.detach().requires_grad_(backward)
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = timer()
        with torch.set_grad_enabled(backward):
            out, s = fn(*ins, s0)
        if backward:
            (out.float().sum() + s.sum()).backward()
        if cuda:
            end.record()
            torch.cuda.synchronize()
            dt = start.elapsed_time(end) / 1e3
        else:
            dt = timer() - t0
        times.append(dt)
    times = times[-repeats:]
    return (statistics.median(times) if cuda else min(times)) * 1e3


def bench_shape(device: str, shape, args) -> List[str]:
    """Time every implementation at `shape` (B, T, H, K) on `device`; print and return markdown rows."""
    cpu = device == "cpu"
    B, T, H, K = shape
    dtype = DTYPES[args.dtype or ("fp32" if cpu else "bf16")]
    timer = time.process_time if args.timer == "cpu" else time.perf_counter
    reps = args.repeats or (5 if cpu else 20)
    xs, state = make_inputs(B, T, H, K, dtype, device)
    impls = []
    if cpu or args.naive_on_cuda:
        impls.append(("naive", lambda *x: wkv7(*x, impl="naive"), args.naive_repeats))
    interp, fla = os.environ.get("TRITON_INTERPRET") == "1", fla_fn()
    for L in args.chunk_sizes:
        impls.append((f"chunked L={L}", lambda *x, L=L: wkv7(*x, impl="chunked", chunk_size=L), reps))
    if triton_available() and (not cpu or interp):
        impls.append(("triton" + (" (interpreter)" if cpu else ""), lambda *x: wkv7(*x, impl="triton"), reps))
        for nw in [] if cpu else args.triton_num_warps:
            if nw != 4:  # timed with triton_kernel.NUM_WARPS = nw (forward and backward)
                impls.append((f"triton num_warps={nw}", lambda *x: wkv7(*x, impl="triton"), reps))
    if not cpu or (interp and fla is None):  # fla runs on CUDA only; last, as its autotuning takes longest
        impls.append(("fla chunk_rwkv7", fla, reps))
    rows, base, times = [], None, {}
    head = f"| {device} | {{}} | ({B}, {T}, {H}, {K}) {str(dtype)[6:]} |"
    for name, fn, n in impls:
        if fn is None:
            rows.append(head.format(name) + " not installed | not installed | - |")
            print(rows[-1], flush=True)
            continue
        with num_warps(int(name.split("=")[1]) if name.startswith("triton num_warps=") else None):
            fwd = time_ms(fn, xs, state, False, n, timer, args.warmup)
            fwd_bwd = float("nan") if args.fwd_only else time_ms(fn, xs, state, True, n, timer, args.warmup)
        speed = f"{base[1] / fwd:.2f}x / {base[2] / fwd_bwd:.2f}x vs {base[0]}" if base else "-"
        if base is None and name == "naive":
            base = (name, fwd, fwd_bwd)
        times[name] = (fwd, fwd_bwd)
        rows.append(head.format(name) + f" {fwd:.2f} | {fwd_bwd:.2f} | {speed} |")
        print(rows[-1], flush=True)
    for name, (fwd, fwd_bwd) in times.items():
        if name.startswith("triton") and "fla chunk_rwkv7" in times:
            fla_fwd, fla_fwd_bwd = times["fla chunk_rwkv7"]
            print(f"fla vs {name} at {shape}: fla time / ours = {fla_fwd / fwd:.2f}x fwd, {fla_fwd_bwd / fwd_bwd:.2f}x "
                  "fwd+bwd (> 1: ours faster)")
    fns = dict((name, fn) for name, fn, _ in impls)
    if not cpu and fns.get("fla chunk_rwkv7") and "triton" in fns:  # same contract? (a check, not a test)
        with torch.no_grad():
            o_fla, s_fla = fns["fla chunk_rwkv7"](*xs, state)
            o_tri, s_tri = fns["triton"](*xs, state)
        diff = [float((x.float() - y.float()).norm() / y.float().norm()) for x, y in ((o_fla, o_tri), (s_fla, s_tri))]
        print(f"fla vs triton at {shape}: relative difference out {diff[0]:.2e}, final state {diff[1]:.2e}")
    return rows


def main() -> None:
    args = get_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tri_inv:
        chunked._TRI_INV_METHOD = args.tri_inv
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            sys.exit("bench_wkv7.py: --device cuda but torch.cuda.is_available() is False")
        devices.remove("cuda")
    gpu = f", {torch.cuda.get_device_name(0)}" if "cuda" in devices else ""
    print(f"torch {torch.__version__}{gpu}, threads {torch.get_num_threads()}, timer {args.timer}, "
          f"tri-inv {chunked._TRI_INV_METHOD}, "
          f"triton {'yes' if triton_available() else 'no'}, fla {'yes' if fla_fn() else f'not installed ({FLA_ERROR})'}"
          + (f"; CUDA: median of {args.repeats or 20} after {args.warmup} warm-up (CUDA events)" if gpu else "")
          + ("; CPU: best of runs" if "cpu" in devices else ""))
    unit = "CPU ms" if args.timer == "cpu" else "ms"
    print(f"| device | impl | (B, T, H, K) dtype | fwd {unit} | fwd+bwd {unit} | speed-up (fwd / fwd+bwd) |")
    print("|---|---|---|---|---|---|")
    for device in devices:
        shapes = args.shape or (CUDA_SHAPES if device == "cuda" else LM_SHAPES if args.lm_shapes else CPU_SHAPES)
        for shape in shapes:
            bench_shape(device, shape, args)


if __name__ == "__main__":
    main()
