"""Checkpoint files: atomic save, safe load, checked state-dict loading, finding and pruning (icefall's API;
model averaging: `averaging.py`; which files decode.py reads: `selection.py`).

Layout of a checkpoint file (as icefall's `icefall/checkpoint.py` `save_checkpoint` writes it): a dict with
  "model"        state dict of the (DDP-unwrapped) model; with `trainable_only=True` only the
                 trainable parameters and the buffers of the modules that own them,
  "model_avg"    the running average (`update_averaged_model`), saved as a float32 *copy*
                 (icefall converts the float64 model_avg in place, so its average continues in
                 float32 after the first save; ours stays float64 in memory),
  "optimizer", "scheduler", "grad_scaler", "sampler"   state dicts, when given,
  "trainable_only" (bool), "base_checkpoints" (dict name -> path) for trainable-only files,
  and every key of `params` (e.g. "batch_idx_train", "cur_epoch", "best_valid_loss").
Everything is stored as tensors / containers / str / numbers so `torch.load(weights_only=True)`
reads it; Path, torch.device, torch.dtype and other objects in `params` are stored as strings.
Files are written atomically: a temp file in the same folder, fsync, then `os.replace`.
Files are read with `safe_torch_load`: weights_only, plus the pathlib classes icefall's own
`save_checkpoint` leaves in epoch-N.pt / checkpoint-N.pt (its `params.exp_dir` is a PosixPath).
"""
import enum
import errno
import logging
import os
import pathlib
import re
import shutil
from pathlib import Path, PurePath
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Union

import torch
from torch import nn

from zipformer_rwkv.errors import CheckpointError, CheckpointWriteError, MissingFileError

PathLike = Union[str, Path]

_STATE_KEYS = ("optimizer", "scheduler", "grad_scaler", "sampler")
# The one list of checkpoint entries that are not `params` keys (training options and counters):
# weights, what describes them, and the state dicts of the training objects.
NON_OPTION_KEYS = ("model", "model_avg", "trainable_only", "base_checkpoints") + _STATE_KEYS


def checkpoint_params(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The `params` a checkpoint was saved with: every entry but `NON_OPTION_KEYS`."""
    return {k: v for k, v in checkpoint.items() if k not in NON_OPTION_KEYS}


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers (else `model`)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _to_safe(value: Any, where: str = "checkpoint") -> Any:
    """Convert `value` to types `torch.load(weights_only=True)` accepts (see module doc).

    Path, torch.device, torch.dtype and enums become strings, numpy scalars Python numbers,
    numpy arrays tensors, sets sorted lists; anything else becomes `str(value)` with a warning
    naming its place (`where`).
    """
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor, torch.Size)):
        return value
    if isinstance(value, dict):
        return {
            (k if isinstance(k, (str, int, float, bool)) else str(k)): _to_safe(v, f"{where}.{k}")
            for k, v in value.items()
        }
    if type(value) is tuple:
        return tuple(_to_safe(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, (list, tuple)):  # lists, namedtuples
        return [_to_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return sorted((_to_safe(v, where) for v in value), key=str)
    if isinstance(value, (PurePath, torch.device, torch.dtype, enum.Enum)):
        return str(value)
    if type(value).__module__ == "numpy":
        import numpy as np

        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.copy())
        if isinstance(value, np.generic):
            return value.item()
    logging.warning(f"{where}: storing {type(value).__name__} as its string {str(value)[:60]!r}")
    return str(value)


def _trainable_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Trainable parameters plus the buffers of every module that owns a trainable parameter."""
    out = {}
    for mod_name, module in model.named_modules():
        prefix = mod_name + "." if mod_name else ""
        own = list(module.named_parameters(recurse=False))
        if not any(p.requires_grad for _, p in own):
            continue
        for name, p in own:
            if p.requires_grad:
                out[prefix + name] = p.detach()
        for name, b in module.named_buffers(recurse=False):
            if name not in module._non_persistent_buffers_set:
                out[prefix + name] = b.detach()
    return out


def _atomic_write(filename: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(f)` on `.<name>.tmp-<pid>` in the folder of `filename`, flush and fsync it, then
    `os.replace` it over `filename` (atomic on POSIX); the temp file is removed if anything fails,
    so `filename` is either the old file or the complete new one.

    Raises:
      CheckpointWriteError: an OS error or a short write of torch's zip writer (its
        "[enforce fail at inline_container.cc] unexpected pos"), one line naming `filename` and
        the reason ("disk full", or the OS error).
    """
    filename = Path(filename)
    tmp = filename.parent / f".{filename.name}.tmp-{os.getpid()}"
    try:
        filename.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) or "inline_container" in str(e) or "PytorchStreamWriter" in str(e):
            raise _write_error(filename, e) from e
        raise
    try:  # make the rename itself durable
        fd = os.open(filename.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _write_error(filename: Path, e: BaseException) -> CheckpointWriteError:
    """One-line `CheckpointWriteError` for a failed write of `filename` (see `_atomic_write`)."""
    cause: Optional[BaseException] = e
    while cause is not None and not (isinstance(cause, OSError) and cause.errno):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        full = cause.errno in (errno.ENOSPC, errno.EDQUOT)
        reason = f"{'disk full' if full else 'OS error'} ({cause.strerror or cause})"
    else:
        try:
            free = f"{shutil.disk_usage(filename.parent).free / 1e6:.0f} MB free there"
        except OSError:
            free = "free space unknown"
        what = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        short = "unexpected pos" in what
        reason = f"disk full? the write stopped short ({free})" if short else f"{what} ({free})"
    return CheckpointWriteError(f"cannot write {filename}: {reason}; the previous file, if any, is kept")


def atomic_torch_save(obj: Any, filename: PathLike) -> None:
    """`torch.save(obj, filename)` that never leaves a partial file at `filename` (`_atomic_write`)."""
    _atomic_write(filename, lambda f: torch.save(obj, f))


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    """Copy `src` to `dst` atomically (`_atomic_write`): a failed copy leaves the old `dst`."""
    with open(src, "rb") as fsrc:
        _atomic_write(dst, lambda f: shutil.copyfileobj(fsrc, f, 1 << 20))


def save_checkpoint(
    filename: PathLike,
    model: nn.Module,
    model_avg: Optional[nn.Module] = None,
    params: Optional[Dict[str, Any]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    scaler: Optional[Any] = None,
    sampler: Optional[Any] = None,
    rank: int = 0,
    trainable_only: bool = False,
    base_checkpoints: Optional[Dict[str, PathLike]] = None,
) -> None:
    """Save a training checkpoint (layout in the module docstring); only rank 0 writes.

    Args:
      filename: e.g. `exp_dir / "epoch-3.pt"`; parent folders are created.
      model: the model, DDP-wrapped or not. model_avg: the float64 running average or None.
      params: training state (AttributeDict or dict); every key is stored at top level.
      optimizer, scheduler, scaler, sampler: objects with `state_dict()`, or None.
      rank: the caller's rank; ranks other than 0 return without writing.
      trainable_only: store only trainable tensors of `model`/`model_avg` (frozen ones come from
        `base_checkpoints` when loading).
      base_checkpoints: names -> paths of the frozen base checkpoints, {"encoder": ..., "llm": ...}
        (what `--encoder-checkpoint` / `--rwkv-checkpoint` name); stored as strings.
        `recipe.get_model_for_checkpoint` loads them when the file is decoded or transcribed.
    Raises:
      ValueError: if a key of `params` collides with a reserved key such as "model".
    """
    if rank != 0:
        return
    model = unwrap_model(model)
    if trainable_only:
        state = _trainable_state_dict(model)
        keep = set(state)
    else:
        state = model.state_dict()
        keep = None
    checkpoint: Dict[str, Any] = {"model": state, "trainable_only": bool(trainable_only)}
    if trainable_only or base_checkpoints:
        checkpoint["base_checkpoints"] = _to_safe(dict(base_checkpoints or {}), "base_checkpoints")
    if model_avg is not None:
        avg = unwrap_model(model_avg).state_dict()
        checkpoint["model_avg"] = {
            k: (v.detach().to(torch.float32) if v.is_floating_point() else v.detach())
            for k, v in avg.items()
            if keep is None or k in keep
        }
    for key, obj in zip(_STATE_KEYS, (optimizer, scheduler, scaler, sampler)):
        if obj is not None:
            checkpoint[key] = _to_safe(obj.state_dict(), key)
    for key, value in (params or {}).items():
        if key in NON_OPTION_KEYS:
            raise ValueError(f"params key '{key}' collides with a checkpoint field")
        checkpoint[key] = _to_safe(value, f"params.{key}")
    atomic_torch_save(checkpoint, filename)
    logging.info(f"Saved checkpoint to {filename}")


# The only non-builtin globals icefall checkpoints hold besides what weights_only already accepts
# (tensors, containers, torch.device/dtype): paths. Constructing one runs no user code.
ICEFALL_SAFE_GLOBALS = (pathlib.PosixPath, pathlib.PurePosixPath,
                        pathlib.WindowsPath, pathlib.PureWindowsPath)


def safe_torch_load(filename: PathLike, map_location: Union[str, torch.device, None] = "cpu",
                    mmap: bool = False) -> Any:
    """`torch.load(filename, map_location=..., weights_only=True)` that also accepts the pathlib
    objects of `ICEFALL_SAFE_GLOBALS` (returned as Path objects). Any other global, e.g. a
    pickle whose `__reduce__` calls a function, is still rejected without running it.

    Raises: whatever `torch.load` raises (`pickle.UnpicklingError` for a rejected global,
    RuntimeError / EOFError for a truncated file); callers add the file name.
    `mmap=True` maps the tensors instead of reading them (to read a few numbers of a big file).
    """
    with torch.serialization.safe_globals(list(ICEFALL_SAFE_GLOBALS)):
        return torch.load(filename, map_location=map_location, weights_only=True, mmap=mmap)


def read_checkpoint(filename: PathLike, device: Union[str, torch.device] = "cpu",
                    mmap: bool = False) -> dict:
    """`safe_torch_load(filename, map_location=device, mmap=mmap)` with clear errors.

    Raises:
      MissingFileError (a FileNotFoundError): if the file does not exist.
      CheckpointError (a RuntimeError): if it cannot be read as a weights-only checkpoint dict
        (truncated/corrupted, or holding a Python object weights-only loading refuses); one line
        naming the file.
    """
    filename = Path(filename)
    if not filename.is_file():
        raise MissingFileError(f"checkpoint {filename} does not exist")
    try:
        checkpoint = safe_torch_load(filename, map_location=device, mmap=mmap)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {filename}: {_why_unreadable(e)}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {filename} holds a {type(checkpoint).__name__}, not a dict")
    return checkpoint


def _why_unreadable(e: Exception) -> str:
    """One line out of torch.load's multi-line errors: the refused global, or the zip reader's
    complaint, without the advice paragraphs."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    refused = next((line for line in lines if "GLOBAL" in line), None)
    if refused is not None:
        refused = re.split(r"\. Please ", refused)[0].replace("WeightsUnpickler error: ", "")
        return f"it holds a Python object that weights_only loading refuses, not run ({refused})"
    first = re.split(r"\. This is an internal", lines[0])[0]
    if "zip archive" in first or isinstance(e, EOFError):
        return f"truncated or corrupted file ({first})"
    return f"{type(e).__name__}: {first}"


def _strip_module_prefix(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state_dict_checked(
    module: nn.Module,
    state: Dict[str, torch.Tensor],
    source: str,
    strict: bool = True,
    allow_missing: bool = False,
) -> None:
    """`module.load_state_dict(state)` with one readable error for key/shape mismatches.

    Args:
      module: target (DDP-wrapped is fine). state: state dict (a `module.` prefix is stripped).
      source: what `state` came from, used in messages (e.g. "exp/epoch-3.pt[model]").
      strict: if True, unexpected keys, missing keys (unless `allow_missing`) and shape
        mismatches raise; if False they are logged as warnings and skipped.
      allow_missing: accept keys of `module` absent from `state` (trainable-only checkpoints).
    Raises:
      CheckpointError (a RuntimeError): naming `source` and listing (up to 10 of) each kind of
        mismatch.
    """
    module = unwrap_model(module)
    state = _strip_module_prefix(state)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems = []
    for label, items in (
        ("missing keys", [] if allow_missing else missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", misshaped),
    ):
        if items:
            more = f" ... (+{len(items) - 10})" if len(items) > 10 else ""
            problems.append(f"{len(items)} {label}: {items[:10]}{more}")
    if problems:
        msg = f"{source} does not match {type(module).__name__}: " + "; ".join(problems)
        if strict:
            raise CheckpointError(msg)
        logging.warning(msg)
    bad = {k.split(":")[0] for k in misshaped}
    usable = {k: v for k, v in state.items() if k in own and k not in bad}
    module.load_state_dict(usable, strict=False)


def load_checkpoint(
    filename: PathLike,
    model: Optional[nn.Module],
    model_avg: Optional[nn.Module] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    scaler: Optional[Any] = None,
    sampler: Optional[Any] = None,
    strict: bool = True,
) -> Dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` into the given objects.

    Tensors are loaded on CPU with `weights_only=True` and copied into the modules (which keep
    their device/dtype). For a trainable-only checkpoint, keys absent from it are accepted as
    missing (load the frozen base checkpoints into `model` first).

    Args:
      filename: the checkpoint. model: target model (DDP ok) or None to skip it.
      model_avg: loaded from "model_avg" if given and present (a warning if absent).
      optimizer, scheduler, scaler, sampler: loaded from their state dicts when given; when
        not given, their entries stay in the returned dict (e.g. build the sampler later and
        call `sampler.load_state_dict(ckpt["sampler"])`).
      strict: raise on missing/unexpected/misshaped keys (else warn and skip them).
    Returns:
      the remaining entries: every `params` key ("batch_idx_train", "cur_epoch", ...),
      "trainable_only", "base_checkpoints" and the state dicts of objects not given.
    Raises:
      FileNotFoundError / RuntimeError: unreadable file, or a mismatch (message names the file).
    """
    checkpoint = read_checkpoint(filename)
    if "model" not in checkpoint:
        raise CheckpointError(f"checkpoint {filename} has no 'model' entry (keys: {list(checkpoint)[:10]})")
    allow_missing = bool(checkpoint.get("trainable_only", False))
    state = checkpoint.pop("model")
    if model is not None:
        load_state_dict_checked(model, state, f"{filename}[model]", strict, allow_missing)
    avg_state = checkpoint.pop("model_avg", None)
    if model_avg is not None:
        if avg_state is None:
            logging.warning(f"{filename} has no model_avg; model_avg left unchanged")
        else:
            load_state_dict_checked(
                model_avg, avg_state, f"{filename}[model_avg]", strict, allow_missing
            )
    for key, obj in zip(_STATE_KEYS, (optimizer, scheduler, scaler, sampler)):
        if obj is None:
            continue
        if key not in checkpoint:
            logging.warning(f"{filename} has no '{key}' state; {type(obj).__name__} not restored")
            continue
        try:
            obj.load_state_dict(checkpoint.pop(key))
        except Exception as e:
            raise CheckpointError(
                f"cannot restore {key} from {filename}: {type(e).__name__}: {e}"
            ) from None
    return checkpoint


def save_checkpoint_with_global_batch_idx(
    out_dir: PathLike,
    global_batch_idx: int,
    model: nn.Module,
    model_avg: Optional[nn.Module] = None,
    params: Optional[Dict[str, Any]] = None,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    scaler: Optional[Any] = None,
    sampler: Optional[Any] = None,
    rank: int = 0,
    trainable_only: bool = False,
    base_checkpoints: Optional[Dict[str, PathLike]] = None,
) -> Path:
    """`save_checkpoint` to `out_dir/checkpoint-{global_batch_idx}.pt`; returns that path."""
    filename = Path(out_dir) / f"checkpoint-{global_batch_idx}.pt"
    save_checkpoint(
        filename, model, model_avg, params, optimizer, scheduler, scaler, sampler, rank,
        trainable_only, base_checkpoints,
    )
    return filename


_CKPT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")


def find_checkpoints(out_dir: PathLike, iteration: int = 0) -> List[str]:
    """`out_dir/checkpoint-N.pt` files, newest (largest N) first.

    Args:
      iteration: 0 = all; > 0 = those with N >= iteration; < 0 = those with N <= -iteration.
    Returns:
      list of paths as strings (empty if none).
    """
    found = []
    for path in Path(out_dir).glob("checkpoint-*.pt"):
        m = _CKPT_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), str(path)))
    found.sort(reverse=True)
    if iteration >= 0:
        return [p for n, p in found if n >= iteration]
    return [p for n, p in found if n <= -iteration]


def remove_checkpoints(out_dir: PathLike, topk: int, rank: int = 0) -> None:
    """Keep the `topk` newest `checkpoint-N.pt` files in `out_dir`, delete the rest (rank 0).

    Raises:
      ValueError: if topk < 1.
    """
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if rank != 0:
        return
    for path in find_checkpoints(out_dir)[topk:]:
        os.remove(path)
