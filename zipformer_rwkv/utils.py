"""Small helpers shared by every module and entry script (icefall's `icefall/utils.py` names).

Nothing here imports k2 or torchaudio.
"""
import argparse
import json
from pathlib import Path
from typing import Any

import torch


class AttributeDict(dict):
    """A dict whose keys are also attributes (`params.batch_idx_train`), as in icefall.

    `str()` gives indented JSON; Paths, devices and dtypes are written as strings.
    """

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"no attribute '{key}'") from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(f"no attribute '{key}'") from None

    def __str__(self) -> str:
        return json.dumps(self, indent=2, default=str, sort_keys=True)


def str2bool(v: str) -> bool:
    """argparse type for `--flag true/false` (icefall's `str2bool`).

    Raises:
      argparse.ArgumentTypeError: for anything but yes/no/true/false/t/f/y/n/1/0.
    """
    if isinstance(v, bool):
        return v
    s = v.lower()
    if s in ("yes", "true", "t", "y", "1"):
        return True
    if s in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def make_pad_mask(lengths: torch.Tensor, max_len: int = 0) -> torch.Tensor:
    """Boolean mask of padded positions.

    Args:
      lengths: (N,) int64, the number of valid frames of each sequence.
      max_len: width of the mask; at least `lengths.max()` is used.
    Returns:
      (N, max_len) bool, True at padded positions (t >= lengths[n]).
    """
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {tuple(lengths.shape)}")
    max_len = max(max_len, int(lengths.max()) if lengths.numel() else 0)
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) >= lengths.unsqueeze(1)


def repo_root() -> Path:
    """The repository root (the folder holding `zipformer_rwkv/`)."""
    return Path(__file__).resolve().parent.parent
