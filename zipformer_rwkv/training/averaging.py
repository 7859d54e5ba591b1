"""Model averaging (icefall's API): the running average kept during training (`model_avg`,
`update_averaged_model`) and the averages decode.py builds from saved checkpoints
(`average_checkpoints`, `average_checkpoints_with_averaged_model`); float64 accumulation."""
from typing import Any, Dict, List, Union

import torch
from torch import nn

from zipformer_rwkv.errors import CheckpointError
from zipformer_rwkv.training.checkpoint import PathLike, _strip_module_prefix, read_checkpoint, unwrap_model


def _unique_keys(state: Dict[str, torch.Tensor]) -> List[str]:
    """Keys of `state` whose tensor storage was not seen under an earlier key."""
    seen, out = set(), []
    for k, v in state.items():
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)) \
            if v.numel() else ("empty", k)
        if ptr not in seen:
            seen.add(ptr)
            out.append(k)
    return out


def average_state_dict(
    state_dict_1: Dict[str, torch.Tensor],
    state_dict_2: Dict[str, torch.Tensor],
    weight_1: float,
    weight_2: float,
    scaling_factor: float = 1.0,
) -> None:
    """In place: `sd1[k] = (sd1[k] * weight_1 + sd2[k] * weight_2) * scaling_factor`.

    Only floating-point tensors are changed; tensors sharing storage are updated once.
    """
    for k in _unique_keys(state_dict_1):
        v = state_dict_1[k]
        if v.is_floating_point():
            v.mul_(weight_1)
            v.add_(state_dict_2[k].to(device=v.device, dtype=v.dtype), alpha=weight_2)
            if scaling_factor != 1.0:
                v.mul_(scaling_factor)


def update_averaged_model(
    params: Dict[str, Any], model_cur: nn.Module, model_avg: nn.Module
) -> None:
    """Running mean of all parameters since the start (icefall's `update_averaged_model`), in place on `model_avg`.

    `avg = avg * (1 - p/b) + cur * (p/b)` with p = params["average_period"] and
    b = params["batch_idx_train"] (call it when b is a multiple of p, b > 0).
    """
    period, batch = params["average_period"], params["batch_idx_train"]
    if not 0 < period <= batch:
        raise ValueError(f"need 0 < average_period ({period}) <= batch_idx_train ({batch})")
    weight_cur = period / batch
    average_state_dict(
        state_dict_1=unwrap_model(model_avg).state_dict(),
        state_dict_2=unwrap_model(model_cur).state_dict(),
        weight_1=1 - weight_cur,
        weight_2=weight_cur,
    )


def _check_same_layout(ref: dict, other: dict, ref_name: str, other_name: str) -> None:
    if set(ref) != set(other):
        diff = sorted(set(ref) ^ set(other))
        raise RuntimeError(
            f"{other_name} and {ref_name} hold different keys, e.g. {diff[:5]} "
            "(checkpoints from different models?)"
        )
    for k, v in ref.items():
        if tuple(v.shape) != tuple(other[k].shape):
            raise RuntimeError(
                f"{other_name}: '{k}' has shape {tuple(other[k].shape)}, "
                f"{ref_name} has {tuple(v.shape)}"
            )


def average_checkpoints(
    filenames: List[PathLike], device: Union[str, torch.device] = "cpu"
) -> Dict[str, torch.Tensor]:
    """Arithmetic mean of the "model" entries of `filenames` (icefall's `average_checkpoints`).

    Floating tensors are summed in float64 and divided by n, then cast back to their dtype;
    integer tensors are summed and floor-divided by n; tensors sharing storage (tied weights)
    are averaged once and stay shared in the result.

    Raises:
      ValueError: for an empty list. RuntimeError: for key/shape mismatches (naming the file).
    """
    if not filenames:
        raise ValueError("average_checkpoints needs at least one file")
    n = len(filenames)
    first = _strip_module_prefix(read_checkpoint(filenames[0], device).get("model") or {})
    if not first:
        raise RuntimeError(f"{filenames[0]} has no 'model' entry")
    keys = _unique_keys(first)
    acc = {k: first[k].to(torch.float64) if first[k].is_floating_point() else first[k].clone()
           for k in keys}
    for f in filenames[1:]:
        state = _strip_module_prefix(read_checkpoint(f, device).get("model") or {})
        _check_same_layout(first, state, str(filenames[0]), str(f))
        for k in keys:
            acc[k] += state[k].to(acc[k].dtype)
    for k in keys:  # aliases of k share its storage, so they are updated too
        first[k].copy_(acc[k] / n if first[k].is_floating_point() else acc[k] // n)
    return first


def average_checkpoints_with_averaged_model(
    filename_start: PathLike,
    filename_end: PathLike,
    device: Union[str, torch.device] = "cpu",
) -> Dict[str, torch.Tensor]:
    """Mean of all weights between two checkpoints from their running averages (icefall's
    `average_checkpoints_with_averaged_model`).

    With s, e = each file's `batch_idx_train` rounded down to a multiple of `average_period`
    (read from `filename_end`): `avg = (avg_e * e - avg_s * s) / (e - s)`, computed in float64
    as `avg_e * (e / (e-s)) + avg_s * (-s / (e-s))` and cast back to the stored dtype.
    `filename_start` is excluded: `--epoch 10 --avg 5` uses epoch-5.pt and epoch-10.pt.

    Raises:
      CheckpointError (a RuntimeError): a file lacks model_avg/batch_idx_train/average_period,
        layouts differ, or e <= s: one line naming both files and the reason.
    """
    ckpts = {}
    for name, f in (("start", filename_start), ("end", filename_end)):
        ckpt = read_checkpoint(f, device)
        for key in ("model_avg", "batch_idx_train", "average_period"):
            if key not in ckpt:
                raise CheckpointError(
                    f"{f} has no '{key}' (saved without model_avg? use --use-averaged-model false)"
                )
        ckpts[name] = ckpt
    period = ckpts["end"]["average_period"]
    raw_s, raw_e = ckpts["start"]["batch_idx_train"], ckpts["end"]["batch_idx_train"]
    s, e = raw_s // period * period, raw_e // period * period
    if raw_e <= raw_s:
        raise CheckpointError(
            f"cannot average between {filename_start} and {filename_end}: the second (batch {raw_e}) "
            f"is not later than the first (batch {raw_s})"
        )
    if not e > s:
        raise CheckpointError(
            f"cannot average between {filename_start} (batch {raw_s}) and {filename_end} (batch {raw_e}): "
            f"model_avg is updated every --average-period {period} batches, and none fell between them; "
            f"use --use-averaged-model false, or a larger --avg"
        )
    avg_s = _strip_module_prefix(ckpts["start"]["model_avg"])
    avg_e = _strip_module_prefix(ckpts["end"]["model_avg"])
    try:
        _check_same_layout(avg_e, avg_s, str(filename_end), str(filename_start))
    except RuntimeError as err:
        raise CheckpointError(str(err)) from None
    w_e, w_s = e / (e - s), -s / (e - s)
    for k in _unique_keys(avg_e):
        v = avg_e[k]
        if v.is_floating_point():
            v.copy_(v.double() * w_e + avg_s[k].double() * w_s)
    return avg_e
