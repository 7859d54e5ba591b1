#!/usr/bin/env python3
"""Average checkpoints (as decode.py does) and write one `pretrained.pt` (icefall's export.py).

Usage (from the repository root):

  python zipformer_rwkv/export.py --exp-dir exp/ctc --epoch 10 --avg 5   # -> exp/ctc/pretrained.pt
  python zipformer_rwkv/export.py --exp-dir exp/lm --epoch 5 --avg 2 --use-averaged-model true

The file holds `{"model": averaged state dict}` plus the training options of the last checkpoint,
so it serves as `--encoder-checkpoint` (ctc) / `--rwkv-checkpoint` (lm) of a speech-LLM run, and as
`transcribe.py --checkpoint`.
"""
import argparse
import logging
import sys
from pathlib import Path

from zipformer_rwkv.training.checkpoint import atomic_torch_save, checkpoint_params, read_checkpoint
from zipformer_rwkv.training.selection import plan_state, resolve_decode_checkpoints
from zipformer_rwkv.utils import str2bool


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--exp-dir", type=Path, required=True)
    parser.add_argument("--epoch", type=int, default=30)
    parser.add_argument("--iter", type=int, default=0)
    parser.add_argument("--avg", type=int, default=1)
    parser.add_argument("--use-averaged-model", type=str2bool, default=False)
    parser.add_argument("--out", type=Path, default=None, help="default: {exp_dir}/pretrained.pt")
    return parser


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = get_parser().parse_args()
    try:
        plan = resolve_decode_checkpoints(args.exp_dir, args.epoch, args.iter, args.avg, args.use_averaged_model)
        state, _ = plan_state(plan)  # the weights decode.py would load (inference.load_model)
        last = read_checkpoint(plan.filenames[-1], mmap=True)  # its options
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"export.py: error: {e}")
    out = args.out or args.exp_dir / "pretrained.pt"
    payload = {k: v for k, v in checkpoint_params(last).items() if k != "rng_state"}  # no training RNG
    payload["model"] = state
    for key in ("trainable_only", "base_checkpoints"):  # what the weights are: kept with them
        if key in last:
            payload[key] = last[key]
    payload["exported_from"] = plan.description
    atomic_torch_save(payload, out)
    logging.info(f"Wrote {out} ({plan.description})")


if __name__ == "__main__":
    main()
