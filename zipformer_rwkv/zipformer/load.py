"""Loading pretrained icefall Zipformer2 encoders (k2-fsa/icefall `egs/librispeech/ASR/zipformer`).

Accepted files: icefall `pretrained.pt` / `epoch-N.pt` / `checkpoint-N.pt` (`{"model": state
dict of the whole AsrModel, ...}`), a bare state dict (encoder-only or a whole model holding the
encoder under some prefix, e.g. `module.` or `encoder.`), and `.safetensors` files. Only
`encoder_embed.*` and `encoder.*` are kept; decoder/joiner/ctc_output/... are ignored.
"""
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor

from zipformer_rwkv.errors import RecipeError
from zipformer_rwkv.training.checkpoint import safe_torch_load
from zipformer_rwkv.utils import str2bool
from zipformer_rwkv.zipformer.config import ENCODER_CONFIGS, ZipformerConfig
from zipformer_rwkv.zipformer.encoder import ZipformerEncoder

_ANCHOR = "encoder_embed.conv.0.weight"
_SHOW = 5  # keys listed per category in error messages


class CheckpointMismatchError(RecipeError, ValueError):
    """A checkpoint cannot be loaded into the Zipformer encoder: unreadable file, no encoder
    keys, or missing / unexpected / misshaped keys (listed, with counts, in the message)."""


def _fmt(keys: List[str]) -> str:
    more = f", ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def read_state_dict(path: Union[str, Path], key: Optional[str] = None) -> Dict[str, Tensor]:
    """All tensors of a checkpoint file as a flat state dict (CPU).

    For a dict checkpoint the entry `key` is used (default: "model", else "state_dict", else the
    dict itself when it maps names to tensors). Uses `checkpoint.safe_torch_load` (weights_only) or
    safetensors.

    Raises:
      FileNotFoundError: path does not exist.
      CheckpointMismatchError: unreadable file or no state dict inside.
    """
    return _state_dict_of(_read_file(path), Path(path), key)


def _read_file(path: Union[str, Path]) -> Mapping[str, Any]:
    """The checkpoint file's top-level dict (weights_only torch.load or safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = safe_torch_load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise CheckpointMismatchError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def _state_dict_of(obj: Mapping[str, Any], path: Path, key: Optional[str]) -> Dict[str, Tensor]:
    candidates = [key] if key else ["model", "state_dict"]
    for k in candidates:
        if k in obj and isinstance(obj[k], Mapping):
            obj = obj[k]
            break
    else:
        if key:
            raise CheckpointMismatchError(f"{path}: no entry {key!r}; top-level keys: {_fmt(sorted(map(str, obj)))}")
    sd = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise CheckpointMismatchError(f"{path}: no tensors found; keys: {_fmt(sorted(map(str, obj)))}")
    return sd


def extract_encoder_state_dict(sd: Mapping[str, Tensor], prefix: Optional[str] = None,
                               source: str = "checkpoint") -> Dict[str, Tensor]:
    """The `encoder_embed.*` / `encoder.*` entries of `sd`, with `prefix` removed.

    prefix None = detect from the unique key ending in `encoder_embed.conv.0.weight` ("" for
    icefall AsrModel dicts, "module." for DDP, "encoder." for a model holding a ZipformerEncoder
    as `encoder`).

    Raises:
      CheckpointMismatchError: no encoder found, or several and no prefix given.
    """
    if prefix is None:
        found = sorted(k[: -len(_ANCHOR)] for k in sd if k.endswith(_ANCHOR))
        if not found:
            raise CheckpointMismatchError(f"{source}: no Zipformer encoder inside (no key ending in "
                                          f"{_ANCHOR!r}); first keys: {_fmt(sorted(sd))}")
        if len(found) > 1:
            raise CheckpointMismatchError(f"{source}: several encoders (prefixes {found}); pass prefix=")
        prefix = found[0]
    keep = (prefix + "encoder_embed.", prefix + "encoder.")
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(keep)}


def infer_config(sd: Mapping[str, Tensor], **overrides: Any) -> ZipformerConfig:
    """ZipformerConfig whose parameter shapes match an encoder state dict.

    Inferred: stacks, downsampling factors, layers, dims, heads, head dims, kernels, pos_dim,
    causal, encoder_embed_channels (rows of `encoder_embed.conv.7.weight`, when present). Not
    stored in weights (taken from `overrides`, else defaults): chunk_size, left_context_frames,
    utterance_cmn and running_cmn (False), feature_dim (80), pos_head_dim (4), and
    encoder_unmasked_dim (from the named config with the same dims, else encoder_dim). `overrides`
    win over inferred values.

    Raises:
      CheckpointMismatchError: a key needed for inference is missing.
    """
    stacks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.encoders\.(\d+)\.", k))})
    if not stacks:
        raise CheckpointMismatchError("cannot infer the Zipformer config: no encoder.encoders.* keys")
    base = ZipformerConfig(**{k: v for k, v in overrides.items()
                              if k in ("pos_head_dim", "feature_dim")})
    pos_head = base.pos_head_dim
    if len(set(pos_head)) == 1:
        pos_head = pos_head[:1] * len(stacks)
    cols: Dict[str, List[int]] = {k: [] for k in (
        "downsampling_factor", "num_encoder_layers", "encoder_dim", "feedforward_dim", "num_heads",
        "query_head_dim", "value_head_dim", "cnn_module_kernel")}
    pos_dim, causal = 48, False
    for i in stacks:
        ds_key = f"encoder.encoders.{i}.downsample.bias"
        pre = f"encoder.encoders.{i}." + ("encoder." if ds_key in sd else "")
        layers = {int(m.group(1)) for k in sd if (m := re.match(re.escape(pre) + r"layers\.(\d+)\.", k))}
        lp = pre + "layers.0."
        try:
            linear_pos = sd[lp + "self_attn_weights.linear_pos.weight"]
            heads = linear_pos.shape[0] // pos_head[i]
            conv = sd.get(lp + "conv_module1.depthwise_conv.weight")
            if conv is None:
                conv = sd[lp + "conv_module1.depthwise_conv.chunkwise_conv.weight"]
                causal = True
            cols["downsampling_factor"].append(sd[ds_key].shape[0] if ds_key in sd else 1)
            cols["num_encoder_layers"].append(len(layers))
            cols["encoder_dim"].append(sd[lp + "norm.bias"].shape[0])
            cols["feedforward_dim"].append(sd[lp + "feed_forward2.in_proj.weight"].shape[0])
            cols["num_heads"].append(heads)
            in_rows = sd[lp + "self_attn_weights.in_proj.weight"].shape[0]
            cols["query_head_dim"].append((in_rows // heads - pos_head[i]) // 2)
            cols["value_head_dim"].append(sd[lp + "self_attn1.in_proj.weight"].shape[0] // heads)
            cols["cnn_module_kernel"].append(conv.shape[-1])
            pos_dim = linear_pos.shape[1]
        except KeyError as e:
            raise CheckpointMismatchError(f"cannot infer the Zipformer config: missing {e.args[0]}") from None
    inferred: Dict[str, Any] = {k: tuple(v) for k, v in cols.items()}
    inferred.update(pos_dim=pos_dim, causal=causal, pos_head_dim=tuple(pos_head))
    if "encoder_embed.conv.7.weight" in sd:
        inferred["encoder_embed_channels"] = sd["encoder_embed.conv.7.weight"].shape[0]
    inferred["encoder_unmasked_dim"] = inferred["encoder_dim"]
    for named in ENCODER_CONFIGS.values():
        if (named.encoder_dim, named.num_encoder_layers) == (inferred["encoder_dim"], inferred["num_encoder_layers"]):
            inferred["encoder_unmasked_dim"] = named.encoder_unmasked_dim
    inferred.update(overrides)
    return replace(base, **inferred)


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, Tensor], source: str) -> None:
    """Raises CheckpointMismatchError (listing missing, unexpected and misshaped keys with
    counts) unless `sd` has exactly the names and shapes of `model.state_dict()`."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    misshaped = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or misshaped:
        cfg = getattr(model, "config", None)
        lines = [f"{source}: checkpoint does not match the Zipformer encoder"
                 + (f" (config {cfg.to_params()})" if cfg is not None else "")]
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
            if keys:
                lines.append(f"  {name} keys ({len(keys)}): {_fmt(keys)}")
        raise CheckpointMismatchError("\n".join(lines))


def load_encoder_checkpoint(path: Union[str, Path], model: Optional[ZipformerEncoder] = None,
                            prefix: Optional[str] = None, key: Optional[str] = None,
                            **config: Any) -> ZipformerEncoder:
    """Loads a pretrained Zipformer2 encoder.

    Args:
      path: icefall `pretrained.pt` / `epoch-N.pt`, an encoder-only state dict, or .safetensors.
      model: load into this ZipformerEncoder (its config must match); None = build one.
      prefix: where the encoder sits in the file's keys (None = detect).
      key: top-level entry of a dict checkpoint (default "model"; e.g. "model_avg").
      **config: ZipformerConfig fields (`causal=True`, `chunk_size="16"`, ...) overriding what
        is inferred from the shapes, or `encoder_config="large"` to build that named config
        (other fields still override) and check the file against it.
    Returns:
      the model with the weights loaded (training/eval mode unchanged).
    Raises:
      FileNotFoundError, CheckpointMismatchError (a ValueError) naming the file; also when the file
      is one of ours whose saved `utterance_cmn` / `running_cmn` option differs from the model's
      (icefall files carry no options and were all trained without them).
    """
    obj = _read_file(path)
    sd = extract_encoder_state_dict(_state_dict_of(obj, Path(path), key), prefix, source=str(path))
    saved = {}  # training options of our train.py/export.py files that no weight shows
    for name in ("utterance_cmn", "running_cmn"):
        value = obj.get(name)
        saved[name] = str2bool(value) if isinstance(value, str) else value
        if model is None and saved[name] is not None:
            config.setdefault(name, saved[name])
    if model is None:
        name = config.pop("encoder_config", None)
        if name is not None:
            if name not in ENCODER_CONFIGS:
                raise ValueError(f"encoder_config must be one of {sorted(ENCODER_CONFIGS)}, got {name!r}")
            cfg = replace(ENCODER_CONFIGS[name], **config)
        else:
            cfg = infer_config(sd, **config)
        model = ZipformerEncoder(cfg)
    elif config:
        raise ValueError("pass either model= or config overrides, not both")
    for name, value in saved.items():
        if value is not None and bool(value) != getattr(model.config, name):
            flag = "--" + name.replace("_", "-")
            raise CheckpointMismatchError(
                f"{path} was trained with {flag} {str(bool(value)).lower()}, but the model "
                f"has {name}={getattr(model.config, name)}: pass {flag} "
                f"{str(bool(value)).lower()} (the features would not match the weights)")
    try:
        check_state_dict(model, sd, source=str(path))
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{e}\n  {_describe(sd)}") from None
    model.load_state_dict(sd, strict=True)
    return model


def _describe(sd: Mapping[str, Tensor]) -> str:
    """One line saying what architecture the checkpoint holds (for error messages)."""
    try:
        cfg = infer_config(sd)
    except CheckpointMismatchError as e:
        return f"(could not infer the checkpoint's own config: {e})"
    named = [n for n, c in ENCODER_CONFIGS.items()
             if replace(c, causal=cfg.causal) == replace(cfg, chunk_size=c.chunk_size,
                                                         left_context_frames=c.left_context_frames)]
    p = cfg.to_params()
    keys = ("num_encoder_layers", "encoder_dim", "feedforward_dim", "num_heads", "causal")
    return ("the checkpoint holds: " + ", ".join(f"{k}={p[k]}" for k in keys)
            + (f" (= --encoder-config {named[0]})" if named else ""))
