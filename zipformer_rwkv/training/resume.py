"""Crash recovery for train.py: where a re-run continues, what an earlier run leaves behind, when a
mid-epoch checkpoint is due, and the sampler state that makes the continuation exact.

Rule (train.py's usage block): with the default --start-epoch 1 --start-batch 0, a run continues
from the newest checkpoint in --exp-dir (`latest_checkpoint`); `--overwrite true` starts over
instead. Files of an earlier run that the new one would mix with (checkpoint-N.pt / epoch-N.pt
past the point it continues from; on a start-over also best-*-loss.pt) are moved, not deleted,
into `exp_dir/superseded-{date-time}/`, so --keep-last-k and decode.py only see this run's files.
"""
import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import List, Optional, Tuple

from zipformer_rwkv.training.checkpoint import PathLike, find_checkpoints, read_checkpoint

_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")


def epoch_checkpoints(exp_dir: PathLike) -> List[Tuple[int, Path]]:
    """(N, path) of every `exp_dir/epoch-N.pt`, by N."""
    found = [(int(m.group(1)), p) for p in Path(exp_dir).glob("epoch-*.pt") if (m := _EPOCH_RE.match(p.name))]
    return sorted(found)


def saved_batch_idx(path: PathLike) -> int:
    """`batch_idx_train` stored in a checkpoint (its tensors are memory-mapped, not read).

    Raises:
      FileNotFoundError / RuntimeError (`checkpoint.read_checkpoint`), naming the file.
    """
    return int(read_checkpoint(path, mmap=True).get("batch_idx_train", 0))


def latest_checkpoint(exp_dir: PathLike) -> Optional[Path]:
    """The checkpoint a re-run continues from: the newest of `checkpoint-N.pt` (N is the number of
    updates, `batch_idx_train`) and the last `epoch-E.pt` (its stored `batch_idx_train`); on a tie
    the epoch file, written after that epoch's validation. None if there is neither."""
    batches = find_checkpoints(exp_dir)
    epochs = epoch_checkpoints(exp_dir)
    if not epochs:
        return Path(batches[0]) if batches else None
    last_epoch = epochs[-1][1]
    if batches and int(Path(batches[0]).stem.split("-")[1]) > saved_batch_idx(last_epoch):
        return Path(batches[0])
    return last_epoch


def start_options(path: Path) -> Tuple[int, int]:
    """(--start-epoch, --start-batch) that continue from `path` (an epoch-E.pt or checkpoint-N.pt)."""
    m = _EPOCH_RE.match(path.name)
    if m:
        return int(m.group(1)) + 1, 0
    return 1, int(path.stem.split("-")[1])


def superseded_files(exp_dir: PathLike, resume_batch: int) -> List[Path]:
    """Files of an earlier run past update `resume_batch` (0: a start-over, which also takes the
    best-*-loss.pt files): checkpoint-N.pt with N > resume_batch and epoch-E.pt whose stored
    batch_idx_train is larger."""
    exp_dir = Path(exp_dir)
    files = [Path(p) for p in find_checkpoints(exp_dir, iteration=resume_batch + 1)]
    files += [p for _, p in epoch_checkpoints(exp_dir) if resume_batch == 0 or saved_batch_idx(p) > resume_batch]
    if resume_batch == 0:
        files += sorted(exp_dir.glob("best-*-loss.pt"))
    return files


def move_aside(files: List[Path], exp_dir: PathLike) -> Optional[Path]:
    """Move `files` into `exp_dir/superseded-{date-time}/` (logged); returns that folder, or None
    when `files` is empty."""
    if not files:
        return None
    dest = Path(exp_dir) / f"superseded-{datetime.now().strftime('%Y-%m-%d-%H-%M-%S')}"
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        f.rename(dest / f.name)
    logging.warning(f"Moved {len(files)} files of an earlier run into {dest}: {[f.name for f in files]}")
    return dest


def choose_start(exp_dir: PathLike, start_epoch: int, start_batch: int, overwrite: bool) -> Tuple[int, int]:
    """(start_epoch, start_batch) of a run: the given ones if either is set (icefall's options),
    else those continuing from the newest checkpoint (`latest_checkpoint`) unless `overwrite`,
    else (1, 0).

    Raises:
      FileNotFoundError / RuntimeError from reading the last epoch-N.pt (naming it).
    """
    if start_batch > 0 or start_epoch > 1 or overwrite:
        return start_epoch, start_batch
    latest = latest_checkpoint(exp_dir)
    if latest is None:
        return 1, 0
    logging.info(f"Continuing from {latest}, the newest checkpoint in {exp_dir} (--overwrite true starts over)")
    return start_options(latest)


class CheckpointTimer:
    """When a time-based mid-epoch checkpoint is due: `minutes` of training since the last save
    (0: never). `clock` returns seconds (time.monotonic)."""

    def __init__(self, minutes: float, clock=time.monotonic) -> None:
        self.seconds, self.clock = minutes * 60.0, clock
        self.last = clock()
        self.rolling: Optional[Path] = None  # the last time-based file, replaced by the next one

    def due(self) -> bool:
        return self.seconds > 0 and self.clock() - self.last >= self.seconds

    def saved(self, path: Optional[Path] = None) -> Optional[Path]:
        """Restart the clock after a save. `path`: a time-based checkpoint; returns the previous
        time-based file, which it replaces (the caller deletes it), else None."""
        self.last = self.clock()
        if path is None:
            return None
        old, self.rolling = self.rolling, path
        return old if old is not None and old != path else None


class _ConsumedSampler:
    """Saved as a checkpoint's "sampler": the sampler state after the `consumed` batches the loop
    received this epoch, not after those the DataLoader's workers prefetched."""

    def __init__(self, train_dl, consumed: int) -> None:
        self.train_dl, self.consumed = train_dl, consumed

    def state_dict(self) -> dict:
        from zipformer_rwkv.dataset.asr_datamodule import AsrDataModule

        return AsrDataModule.sampler_state_dict(self.train_dl, self.consumed)


def sampler_to_save(model_type: str, train_dl, consumed: int):
    """What train.py passes as `sampler` to save_checkpoint after `consumed` batches of this
    epoch: the text sampler itself (lm: no workers), else the consumed-batches state."""
    return train_dl.sampler if model_type == "lm" else _ConsumedSampler(train_dl, consumed)


def batches_in_saved_sampler(model_type: str, saved: Optional[dict]) -> int:
    """Batches of the current epoch that a mid-epoch checkpoint's sampler state had consumed
    (read it before the sampler loads the state: lhotse's load_state_dict pops from it)."""
    if not saved or model_type == "lm" or "sampler" not in saved:
        return 0
    diag = saved["sampler"]["diagnostics"]
    return int(diag["stats_per_epoch"][diag["current_epoch"]]["kept_batches"])
