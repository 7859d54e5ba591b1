#!/usr/bin/env python3
"""Compile the Triton WKV7 kernels ahead of time for a CUDA architecture, without a GPU.

Runs Triton's whole NVIDIA pipeline (TTIR -> PTX -> cubin with the ptxas bundled in the triton wheel)
for the forward and backward kernels at head size K = V = 64, for each --dtypes and value-block width
BV (32: B*H < 128, 64: B*H >= 128) and warps per program (the kernel's NUM_WARPS = 4 by default),
and prints a table of registers per thread, stack bytes (register spills) and shared memory bytes. It shows that the
compiled (non-interpreter) kernels build for the target; it measures nothing that runs.
Uses Triton's `ASTSource` / `triton.compile` API (checked with triton 3.9).

Usage:
  python bench/wkv7_compile_check.py --num-warps 4 8      # sm_90 (H100), bf16
  python bench/wkv7_compile_check.py --arch 80 --dtypes bf16 fp16 fp32
"""
import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile, never interpret (Triton reads this at first import)

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from zipformer_rwkv.rwkv7.wkv7 import triton_kernel as tk

TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
IN_DTYPE_PTRS = {"r_ptr", "w_ptr", "k_ptr", "v_ptr", "a_ptr", "b_ptr", "o_ptr", "do_ptr"}  # others are fp32


def compile_kernel(kernel, dtype: str, bv: int, arch: int, num_warps: int):
    """Compile `kernel` (fwd or bwd) for inputs of `dtype` ("bf16"/"fp16"/"fp32"), K = V = 64."""
    consts = dict(H=2, K=64, V=64, BV=bv, BT=tk.BT, HAS_H0=True, SAVE_STATES=True, HAS_DHT=True,
                  PREC=tk._precision(TORCH_DTYPES[dtype]))
    names = kernel.arg_names
    sig = {n: ("constexpr" if n in consts else f"*{dtype}" if n in IN_DTYPE_PTRS else "*fp32" if n.endswith("_ptr")
               else "i32") for n in names}
    src = ASTSource(fn=kernel, signature=sig, constexprs={(names.index(n),): consts[n] for n in names if n in consts})
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(num_warps=num_warps))


def resource_usage(cubin: bytes) -> str:
    """'REG:n STACK:n' from the bundled cuobjdump, or '?' when it is missing."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.is_file():
        return "? | ?"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        Path(path).write_bytes(cubin)
        out = subprocess.run([str(tool), "-res-usage", path], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return f"{m.group(1)} | {m.group(2)}" if m else "? | ?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100, 80: A100)")
    p.add_argument("--dtypes", nargs="+", choices=["bf16", "fp16", "fp32"], default=["bf16"])
    p.add_argument("--block-v", type=int, nargs="+", default=[32, 64])
    p.add_argument("--num-warps", type=int, nargs="+", default=[tk.NUM_WARPS])
    args = p.parse_args()
    print(f"triton {triton.__version__}, target sm_{args.arch}, K = V = 64 (ahead-of-time compile, no GPU)")
    print("| kernel | dtype | BV | num_warps | registers | stack bytes (spills) | shared bytes |")
    print("|---|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        for bv in args.block_v:
            for nw in args.num_warps:
                for name, kernel in (("fwd", tk._wkv7_fwd_kernel), ("bwd", tk._wkv7_bwd_kernel)):
                    k = compile_kernel(kernel, dtype, bv, args.arch, nw)
                    usage = resource_usage(k.asm["cubin"])
                    print(f"| {name} | {dtype} | {bv} | {nw} | {usage} | {k.metadata.shared} |", flush=True)


if __name__ == "__main__":
    main()
