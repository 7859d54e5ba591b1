#!/usr/bin/env python3
"""RWKV-7 prefill (and single-token decode) speed: our `RWKV7` vs BlinkDL's `rwkv` PyPI package.

Both run the same random checkpoint in BlinkDL's format (bf16 `.pth`, 0.1B shape by default:
L=12, C=768, V=65536, LoRA 64/64/32/128), written to a temporary file, on the CPU, in each of
--dtypes: float32 (ours: `load_rwkv7_checkpoint(dtype=torch.float32)`; package strategy `cpu fp32`)
and/or bfloat16 (ours: bf16 weights and activations, fp32 WKV state; package `cpu bf16`). bf16 pays
off where the CPU multiplies bf16 natively (AVX512-BF16 / AMX): there its matmuls run ~2.7x faster
than fp32 ones on this project's VM. Prefill = all prompt tokens in parallel, logits of the last
position only (what the `rwkv` package returns; ours via `forward_features(idx, last_only=True)`);
decode = one token at a time with carried state. Prints a markdown table: each row compares the two
in one dtype; "vs fp32" is the last logits' max abs difference from the package's float32 logits,
divided by their std (the numerical cost of bf16).

Usage:
  python bench/bench_rwkv7_prefill.py                      # T = 128, 512
  python bench/bench_rwkv7_prefill.py --tokens 1024 --threads 2
  python bench/bench_rwkv7_prefill.py --tokens 1024 --threads 2 --dtypes float32 bfloat16
  ZIPRWKV_WKV7_IMPL=naive python bench/bench_rwkv7_prefill.py --skip-rwkv-package
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from zipformer_rwkv.rwkv7.load import MODEL_SIZES, load_rwkv7_checkpoint
from zipformer_rwkv.rwkv7.model import RWKV7, RWKV7Config

DTYPES = {"float32": (torch.float32, "cpu fp32"), "bfloat16": (torch.bfloat16, "cpu bf16")}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="0.1B", choices=list(MODEL_SIZES), help="shape of the random checkpoint")
    p.add_argument("--tokens", type=int, nargs="+", default=[128, 512], help="prompt lengths T")
    p.add_argument("--decode-tokens", type=int, default=32, help="tokens for the decode measurement")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per point (best is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=sorted(DTYPES),
                   help="parameter / activation dtypes to time (the package strategy follows)")
    p.add_argument("--skip-rwkv-package", action="store_true", help="time only our model")
    return p


def random_checkpoint(size: str, path: Path) -> None:
    """A random BlinkDL-format checkpoint (bf16, BlinkDL names and shapes) of a size-table shape."""
    n_layer, n_embd, dw, da, dv, dg = MODEL_SIZES[size]
    cfg = RWKV7Config(n_layer=n_layer, n_embd=n_embd, d_decay=dw, d_aaa=da, d_mv=dv, d_gate=dg)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in RWKV7(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in shapes.items():
        x = torch.randn(shape, generator=g)
        if key.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_x.weight", "ln_out.weight")):
            x = 1 + 0.1 * x
        elif key.split(".")[-1].startswith("x_"):
            x = torch.rand(shape, generator=g)
        elif len(shape) == 2 and not key.endswith("r_k"):
            x = x * shape[-1] ** -0.5
        else:
            x = 0.1 * x
        sd[key] = x.to(torch.bfloat16)
    torch.save(sd, path)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (TorchScript compilation, allocator)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_ours(path: Path, lengths, n_decode: int, repeats: int, dtype: torch.dtype):
    model = load_rwkv7_checkpoint(path, dtype=dtype)
    rows, last = {}, {}
    with torch.inference_mode():
        for T in lengths:
            idx = torch.randint(0, 65530, (1, T), generator=torch.Generator().manual_seed(T))

            def prefill():  # hidden state and logits of the last position only, as the rwkv package
                hidden, _ = model.forward_features(idx, last_only=True)
                last[T] = model.logits(hidden)[0].float()

            rows[T] = T / best_time(prefill, repeats)
        state = model.init_state(1)
        tok = torch.tensor([11])

        def decode():
            s = state
            for _ in range(n_decode):
                _, s = model.step(tok, s)

        dec = n_decode / best_time(decode, repeats)
    return rows, dec, last


def bench_rwkv_package(path: Path, lengths, n_decode: int, repeats: int, strategy: str):
    os.environ.update(RWKV_V7_ON="1", RWKV_JIT_ON="1", RWKV_CUDA_ON="0")
    from rwkv.model import RWKV

    model = RWKV(model=str(path)[: -len(".pth")], strategy=strategy)
    rows, last = {}, {}
    for T in lengths:
        tokens = torch.randint(0, 65530, (1, T), generator=torch.Generator().manual_seed(T))[0].tolist()

        def prefill():
            out, _ = model.forward(tokens, None)
            last[T] = out.float()

        rows[T] = T / best_time(prefill, repeats)

    def decode():
        s = None
        for _ in range(n_decode):
            _, s = model.forward([11], s)

    dec = n_decode / best_time(decode, repeats)
    return rows, dec, last


def main() -> None:
    args = get_parser().parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    impl = os.environ.get("ZIPRWKV_WKV7_IMPL", "auto")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"rwkv7-random-{args.size}.pth"
        random_checkpoint(args.size, path)
        # The package's float32 logits are the reference of the "vs fp32" column, so it always runs.
        if not args.skip_rwkv_package and "float32" not in args.dtypes:
            results["float32"] = None, bench_rwkv_package(path, args.tokens, 1, 1, "cpu fp32")
        for name in args.dtypes:
            dtype, strategy = DTYPES[name]
            ours = bench_ours(path, args.tokens, args.decode_tokens, args.repeats, dtype)
            ref = None
            if not args.skip_rwkv_package:
                ref = bench_rwkv_package(path, args.tokens, args.decode_tokens, args.repeats, strategy)
            results[name] = ours, ref

    print(f"\nRWKV-7 {args.size} random checkpoint, CPU, {torch.get_num_threads()} threads, batch 1, "
          f"wkv7 impl={impl}\n")
    print("| dtype | T | ours tok/s | rwkv pkg tok/s | speed-up | max abs diff / std: vs pkg same dtype "
          "| ours vs pkg fp32 |")
    print("|---|---|---|---|---|---|---|")
    fp32_ref = results["float32"][1][2] if "float32" in results and results["float32"][1] else None

    def err(a, b):
        return f"{((a - b).abs().max() / b.std()).item():.1e}"

    for name in args.dtypes:
        (ours, ours_dec, ours_last), ref = results[name]
        for T in args.tokens:
            if ref is None:
                print(f"| {name} | {T} | {ours[T]:.0f} | - | - | - | - |")
                continue
            ref_rows, _, ref_last = ref
            print(f"| {name} | {T} | {ours[T]:.0f} | {ref_rows[T]:.0f} | {ours[T] / ref_rows[T]:.1f}x | "
                  f"{err(ours_last[T], ref_last[T])} | {err(ours_last[T], fp32_ref[T])} |")
        line = f"| {name} | decode (step) | {ours_dec:.1f} |"
        line += f" {ref[1]:.1f} | {ours_dec / ref[1]:.2f}x | - | - |" if ref is not None else " - | - | - | - |"
        print(line)


if __name__ == "__main__":
    main()
