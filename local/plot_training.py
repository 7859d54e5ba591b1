#!/usr/bin/env python3
"""Plot train/valid loss curves of every training in a run.sh exp dir into one PNG.

Usage:
  python local/plot_training.py --exp-dir exp --output exp/training_curves.png
  python local/plot_training.py --model-dirs exp/ctc exp/llm --output curves.png

One panel per model folder (`{exp_dir}/{ctc,lm,llm}`, any folder with `tensorboard/` or `log/`):
the running training loss (`train/tot_loss`) and the validation loss (`train/valid_loss`) against
the global batch index, read from the TensorBoard event files that train.py writes. A folder
without event files (`--tensorboard false`) is read from its `log/log-train-*` lines instead
(batch index rebuilt from the per-epoch batch counters). Losses are per frame (ctc, llm) or per
token (lm), as train.py logs them.
"""
import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

Curves = Dict[str, List[Tuple[int, float]]]  # name -> [(batch, value)]
TRAIN_RE = re.compile(r"Epoch (\d+), batch (\d+), loss\[loss=([-\d.eE+naif]+)[^\]]*\], tot_loss\[loss=([-\d.eE+naif]+)")
VALID_RE = re.compile(r"Epoch (\d+), validation: loss=([-\d.eE+naif]+)")
TAGS = {"train": "train/tot_loss", "valid": "train/valid_loss"}


def curves_from_tensorboard(tb_dir: Path) -> Curves:
    """{"train": [...], "valid": [...]} from the event files in `tb_dir` (empty if it holds none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(tb_dir.glob("events.out.tfevents.*")):
        return {}
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    have = set(acc.Tags().get("scalars", []))
    return {name: [(e.step, e.value) for e in acc.Scalars(tag)] for name, tag in TAGS.items() if tag in have}


def curves_from_logs(log_dir: Path) -> Curves:
    """The same curves from train.py's log lines (files in name order = time order)."""
    train, valid = [], []
    offset, last_epoch, last_batch = 0, None, 0
    for f in sorted(log_dir.glob("log-train-*")):
        for line in f.read_text(encoding="utf8", errors="replace").splitlines():
            m = TRAIN_RE.search(line)
            if m:
                epoch, batch = int(m.group(1)), int(m.group(2))
                if last_epoch is not None and epoch != last_epoch:
                    offset += last_batch + 1
                last_epoch, last_batch = epoch, batch
                train.append((offset + batch, float(m.group(4))))
                continue
            m = VALID_RE.search(line)
            if m:
                valid.append((offset + last_batch, float(m.group(2))))
    return {k: v for k, v in (("train", train), ("valid", valid)) if v}


def read_curves(model_dir: Path) -> Curves:
    curves = curves_from_tensorboard(model_dir / "tensorboard") if (model_dir / "tensorboard").is_dir() else {}
    if not curves and (model_dir / "log").is_dir():
        curves = curves_from_logs(model_dir / "log")
    return curves


def find_model_dirs(exp_dir: Path) -> List[Path]:
    """Sub-folders of exp_dir that hold a training (tensorboard/ or log/log-train-*), *.prev skipped."""
    order = {"ctc": 0, "lm": 1, "llm": 2}  # run.sh stage order first
    dirs = [d for d in exp_dir.iterdir() if d.is_dir() and not d.name.endswith(".prev")
            and ((d / "tensorboard").is_dir() or any((d / "log").glob("log-train-*")))]
    return sorted(dirs, key=lambda d: (order.get(d.name, 3), d.name))


def plot(output: Path, panels: Dict[str, Curves]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        if "train" in curves:
            ax.plot(*zip(*curves["train"]), label="train (running)", lw=1.2)
        if "valid" in curves:
            ax.plot(*zip(*curves["valid"]), "o-", label="valid", ms=4)
        ax.set_title(name)
        ax.set_xlabel("batch")
        ax.set_ylabel("loss per token" if name.endswith("lm") and not name.endswith("llm") else "loss per frame")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if not curves:
            ax.text(0.5, 0.5, "no loss values logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp-dir", type=Path, default=None, help="plot every training under this folder")
    parser.add_argument("--model-dirs", type=Path, nargs="*", default=[], help="train.py --exp-dir folders")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    dirs = list(args.model_dirs)
    if args.exp_dir is not None:
        if not args.exp_dir.is_dir():
            sys.exit(f"plot_training.py: error: --exp-dir {args.exp_dir} does not exist")
        dirs += find_model_dirs(args.exp_dir)
    if not dirs:
        sys.exit("plot_training.py: error: no training folders (tensorboard/ or log/log-train-*) found")
    panels = {d.name: read_curves(d) for d in dirs}
    for name, curves in panels.items():
        print(f"{name}: " + ", ".join(f"{k} {len(v)} points, last {v[-1][1]:.4g}" for k, v in curves.items())
              if curves else f"{name}: no loss values found")
    plot(args.output, panels)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
