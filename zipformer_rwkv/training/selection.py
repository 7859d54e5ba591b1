"""Which checkpoint files `--epoch/--iter/--avg/--use-averaged-model` mean, and the model they make
(decode.py, transcribe.py, export.py and the benches; icefall's decode.py picks them the same way)."""
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple, Union

import torch
from torch import nn

from zipformer_rwkv.training.averaging import average_checkpoints, average_checkpoints_with_averaged_model
from zipformer_rwkv.training.checkpoint import PathLike, find_checkpoints, load_state_dict_checked, read_checkpoint


@dataclass
class DecodeCheckpoints:
    """Which files decode.py should read.

    method: "load" (one file, its "model"), "average" (`average_checkpoints(filenames)`) or
      "averaged_model" (`average_checkpoints_with_averaged_model(*filenames)`, start then end).
    filenames: the files, in the order the method takes them.
    description: e.g. "averaged model between epoch-5.pt (excluded) and epoch-10.pt".
    """

    method: str
    filenames: List[Path] = field(default_factory=list)
    description: str = ""


def _require_files(files: List[Path], exp_dir: Path, what: str) -> None:
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        have = sorted(p.name for p in exp_dir.glob("*.pt")) if exp_dir.is_dir() else []
        raise FileNotFoundError(
            f"{what} needs {missing} in {exp_dir}, which is missing them "
            f"(available: {have if have else 'no .pt files'})"
        )


def resolve_decode_checkpoints(
    exp_dir: PathLike, epoch: int, iter: int, avg: int, use_averaged_model: bool
) -> DecodeCheckpoints:
    """Decide which checkpoints `--epoch/--iter/--avg/--use-averaged-model` mean (as icefall's
    `egs/librispeech/ASR/zipformer/decode.py` picks them).

    - iter > 0: the newest `avg` (or `avg + 1` with use_averaged_model) files
      `checkpoint-N.pt` with N <= iter.
    - otherwise, use_averaged_model: epoch-{epoch-avg}.pt (excluded) and epoch-{epoch}.pt;
      not averaged: epoch-{epoch-avg+1..epoch}.pt (one file when avg == 1).
    Raises:
      ValueError: avg < 1, or avg larger than the epochs/checkpoints available.
      FileNotFoundError: a needed file is missing (lists what exp_dir has).
    """
    exp_dir = Path(exp_dir)
    if avg < 1:
        raise ValueError(f"--avg must be >= 1, got {avg}")
    if iter > 0:
        need = avg + 1 if use_averaged_model else avg
        files = [Path(f) for f in find_checkpoints(exp_dir, iteration=-iter)][:need]
        if len(files) < need:
            raise ValueError(
                f"--iter {iter} --avg {avg}{' --use-averaged-model' if use_averaged_model else ''}"
                f" needs {need} checkpoint-N.pt files with N <= {iter} in {exp_dir}, "
                f"found {len(files)}: {[f.name for f in files]}"
            )
        if use_averaged_model:
            return DecodeCheckpoints(
                "averaged_model", [files[-1], files[0]],
                f"averaged model between {files[-1].name} (excluded) and {files[0].name}",
            )
        method = "load" if avg == 1 else "average"
        return DecodeCheckpoints(method, files, f"average of {[f.name for f in files]}")
    if epoch < 1:
        raise ValueError(f"--epoch must be >= 1 when --iter is 0, got {epoch}")
    if use_averaged_model:
        start = epoch - avg
        if start < 1:
            raise ValueError(
                f"--epoch {epoch} --avg {avg} --use-averaged-model needs epoch-{start}.pt; "
                f"use --avg <= {epoch - 1} (or --use-averaged-model false)"
            )
        files = [exp_dir / f"epoch-{start}.pt", exp_dir / f"epoch-{epoch}.pt"]
        _require_files(files, exp_dir, f"--epoch {epoch} --avg {avg} --use-averaged-model")
        return DecodeCheckpoints(
            "averaged_model", files,
            f"averaged model between {files[0].name} (excluded) and {files[1].name}",
        )
    start = epoch - avg + 1
    if start < 1:
        raise ValueError(
            f"--epoch {epoch} --avg {avg} would average epochs {start}..{epoch}, "
            f"but epochs start at 1; use --avg <= {epoch}"
        )
    files = [exp_dir / f"epoch-{i}.pt" for i in range(start, epoch + 1)]
    _require_files(files, exp_dir, f"--epoch {epoch} --avg {avg}")
    method = "load" if avg == 1 else "average"
    return DecodeCheckpoints(method, files, f"average of {[f.name for f in files]}")


def plan_state(plan: DecodeCheckpoints,
               device: Union[str, torch.device] = "cpu") -> Tuple[Dict[str, torch.Tensor], dict]:
    """The weights `plan` selects: one file's "model", the mean of the files' "model"
    (`average_checkpoints`), or the mean through their model_avg
    (`average_checkpoints_with_averaged_model`).

    Returns:
      (state dict, the first file's entries: for "load" all of them, else read without its tensors).
    Raises:
      RuntimeError / FileNotFoundError: as `read_checkpoint` and the averaging functions.
    """
    if plan.method == "load":
        first = read_checkpoint(plan.filenames[0], device)
        return first["model"], first
    first = read_checkpoint(plan.filenames[0], device, mmap=True)
    if plan.method == "average":
        return average_checkpoints(plan.filenames, device), first
    if plan.method == "averaged_model":
        return average_checkpoints_with_averaged_model(*plan.filenames, device=device), first
    raise ValueError(f"unknown method {plan.method!r}")


def load_decode_model(
    model: nn.Module,
    plan: DecodeCheckpoints,
    device: Union[str, torch.device] = "cpu",
    strict: bool = True,
) -> None:
    """Load the weights `plan` selects (`plan_state`) into `model` (trainable-only files: load the
    frozen base weights into `model` first; their absent keys are accepted).

    Raises:
      RuntimeError / FileNotFoundError: as `read_checkpoint` and `load_state_dict_checked`.
    """
    state, first = plan_state(plan, device)
    allow_missing = bool(first.get("trainable_only", False))
    load_state_dict_checked(model, state, plan.description, strict, allow_missing)
    logging.info(f"Loaded {plan.description}")
